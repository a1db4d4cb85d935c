"""What gateways import: the Python client (fails open, privacy-aware) and the LiteLLM routing hook."""
