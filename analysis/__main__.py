"""`python -m analysis DIR [DIR ...]` is `archstudy analyze DIR [DIR ...]`."""
import sys

from study.cli import main

sys.exit(main(["analyze", *sys.argv[1:]]))
