"""The operations loop around the service: the decision log and its migrations, the feedback report
and export, audits of logged traffic, shadow evaluation and labeling with LLM judges."""
