"""tierwise: route each LLM request to the cheapest model tier that can handle it.

The `tierwise` package lives in this folder (pyproject.toml maps it), one room per concept:

- `tierwise.core`: a model folder and what reads it (manifest, text encoding, request text,
  classifier, estimator, escalation, scoring, policy, privacy, score-then-decide). No HTTP, no
  training, no other room.
- `tierwise.evidence`: what the service records (the decision log and its migrations, shadow
  evaluation with an LLM judge).
- `tierwise.service`: the HTTP service (settings, app factory, routes, batcher, metrics, logs).
- `tierwise.ops`: offline work around the service (the report and feedback export, audits,
  labeling with LLM judges); nothing served imports it.
- `tierwise.gateway`: what gateways import (the Python client, the LiteLLM routing hook).
- `tierwise.cli`: the `tierwise` command.
- `tierwise.training` (the `training/` folder, its own distribution `tierwise-training`): data,
  fine-tuning, export, calibration, reports. Nothing above imports it, torch or transformers.
"""
