"""`python -m study ...` is the `archstudy` command (see study/cli.py)."""
import sys

from .cli import main

sys.exit(main())
