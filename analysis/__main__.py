"""`python -m analysis DIR [DIR ...]`: the same as `archstudy analyze DIR [DIR ...]` (analysis/cli.py)."""
import sys

from analysis.cli import main

sys.exit(main())
