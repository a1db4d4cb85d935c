"""`python -m serving`: start the HTTP service with the TIERWISE_* settings."""

from serving.app import serve

if __name__ == "__main__":
    serve()
