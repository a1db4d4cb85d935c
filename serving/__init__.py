"""tierwise serving: everything needed to classify requests from a model folder.

Needs only onnxruntime, tokenizers, numpy (and FastAPI for the HTTP service); never imports
`training`, torch or transformers.
"""
