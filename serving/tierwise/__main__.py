"""`python -m tierwise`: the `tierwise` command (same as the installed script)."""

from tierwise.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
