"""The operations loop around the service: the decision log and its migrations, feedback, reports,
audits of logged traffic, shadow evaluation and labeling with LLM judges."""
