"""The `tierwise` command: one entry point, one grammar, one error handler."""
