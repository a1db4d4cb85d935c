"""`python -m tierwise.service`: start the HTTP service with the TIERWISE_* settings."""

from tierwise.service.app import serve

if __name__ == "__main__":
    serve()
