"""Tools beside the product, run from a repository checkout (never shipped in the wheel): benchmarks,
the reliability suite, the labeling benchmark and the fake LLM API they drive."""
