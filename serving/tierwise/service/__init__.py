"""The HTTP service: settings, the app factory and its routes (POST /feedback's glue included), the
micro-batcher, metrics, logs, tracing."""
