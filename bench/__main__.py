"""``python -m bench``: the HTTP benchmark (bench/cli.py)."""

import sys

from bench.cli import main

sys.exit(main())
