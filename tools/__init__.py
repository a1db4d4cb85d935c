"""Tools beside the product, run from a repository checkout (never shipped in the wheel): benchmarks,
the reliability suite, the labeling benchmark, the fake LLM API they drive, and the doubles both they
and the tests use (doubles.py, tiny_model.py, privacy_cases.py). Tests may import tools; tools never
import tests."""
