"""`python -m tools.reliability`: see tools/reliability/__init__.py."""

import sys

from tools.reliability.cli import main

sys.exit(main())
