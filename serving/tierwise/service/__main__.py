"""`python -m tierwise.service`: start the HTTP service (options: serving/tierwise/service/server.py)."""

from tierwise.service.server import main

if __name__ == "__main__":
    raise SystemExit(main())
