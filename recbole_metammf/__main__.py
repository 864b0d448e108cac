"""``python -m recbole_metammf --model=... --dataset=...``: the same as ``run_recbole.py``."""

import sys

import recbole_metammf  # noqa: F401  (registers the plugin with RecBole)
from recbole_metammf.quick_start import cli

if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
