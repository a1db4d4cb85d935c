"""tierwise: route each LLM request to the cheapest model tier that can handle it.

The `tierwise` package lives in this folder (pyproject.toml maps it), one room per concept:

- `tierwise.core`: a model folder and what reads it (manifest, text encoding, request text,
  classifier, estimator, escalation, scoring, policy, privacy). No HTTP, no training.
- `tierwise.service`: the HTTP service (settings, app factory, routes, batcher, metrics, logs).
- `tierwise.ops`: the operations loop around the service (decision log, feedback, reports, audit,
  shadow evaluation, labeling with LLM judges).
- `tierwise.gateway`: what gateways import (the Python client, the LiteLLM routing hook).
- `tierwise.cli`: the `tierwise` command.
- `tierwise.training` (the `training/` folder, its own distribution `tierwise-training`): data,
  fine-tuning, export, calibration, reports. Nothing above imports it, torch or transformers.
"""
