"""A model folder and what reads it: manifest, text encoding, classifier, estimator, escalation, scoring,
policy, privacy. Pure code over numpy, onnxruntime and tokenizers; no HTTP, no training."""
