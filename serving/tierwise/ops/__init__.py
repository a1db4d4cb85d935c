"""Offline work around the service: the routing report and feedback export, audits of logged
traffic and labeling with LLM judges. The service never imports this room."""
