"""`python -m labkit …` runs the command line (see labkit/cli.py)."""
import sys

from labkit.cli import main

sys.exit(main())
