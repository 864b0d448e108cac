"""Train and evaluate a model with RecBole, plugin models included.

    python run_recbole.py --model=MetaMMF_GCN --dataset=mm-ml-100k [--config_files="a.yaml b.yaml"] [--key=value ...]
"""

import sys

import recbole_metammf  # noqa: F401  (registers the plugin with RecBole)
from recbole_metammf.quick_start import main

if __name__ == "__main__":
    main(sys.argv[1:])
