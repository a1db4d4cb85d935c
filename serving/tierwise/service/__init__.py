"""The HTTP service: settings, the app factory and its routes, the micro-batcher, metrics, logs, tracing."""
