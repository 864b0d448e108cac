"""Command line: ``python -m dataset_converters <kind> ...``; see ``--help``."""

import sys

from dataset_converters.cli import main

if __name__ == "__main__":
    sys.exit(main())
