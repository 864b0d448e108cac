"""Train and evaluate a model with RecBole, plugin models included.

    python run_recbole.py --model=MetaMMF_GCN --dataset=mm-ml-100k [--config_files="a.yaml b.yaml"] [--key=value ...]

A mistake (unknown model, missing dataset, bad config key or value, bad data) ends with
one line on stderr and exit status 2; ``--debug`` shows its traceback.
"""

import sys

import recbole_metammf  # noqa: F401  (registers the plugin with RecBole)
from recbole_metammf.quick_start import cli

if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
