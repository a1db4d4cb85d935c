"""What the service records about its decisions and the verdicts on them: the decision log and its
migrations, and shadow evaluation with an LLM judge. The service writes here; the offline work of
`tierwise.ops` (reports, audits, labeling) reads from here, and never the other way round."""
