"""Model name -> class, and registration with RecBole's own ``get_model``.

RecBole's ``get_model(name)`` looks for a module
``recbole.model.<submodule>.<name.lower()>`` with ``importlib.util.find_spec``,
which answers from ``sys.modules`` first. Registering each plugin model's module
there under RecBole's naming makes every part of RecBole (``Config``,
``run_recbole``, ``objective_function``, ``load_data_and_model``) find plugin
models by name with no function patched.
"""

import importlib
import sys

# name -> module (one file per model, named after the class, lower-cased)
MODELS = {
    "MetaMMF_MF": "recbole_metammf.model.metammf_mf",
    "MetaMMF_GCN": "recbole_metammf.model.metammf_gcn",
    "VBPR": "recbole_metammf.model.vbpr",
    "MMGCN": "recbole_metammf.model.mmgcn",
    "GRCN": "recbole_metammf.model.grcn",
    "LATTICE": "recbole_metammf.model.lattice",
    "FREEDOM": "recbole_metammf.model.freedom",
}

_RECBOLE_PACKAGE = "recbole.model.general_recommender"


def register(name: str, module_path: str) -> type:
    """Expose ``module_path`` to RecBole under ``name`` and return the class."""
    module = importlib.import_module(module_path)
    sys.modules[f"{_RECBOLE_PACKAGE}.{name.lower()}"] = module
    return getattr(module, name)


def register_all() -> dict:
    return {name: register(name, path) for name, path in MODELS.items()}


def get_model(name: str) -> type:
    """The class of a plugin or RecBole model by name, or a clear error for an unknown name."""
    from recbole.utils import get_model as recbole_get_model

    try:
        return recbole_get_model(name)
    except (ModuleNotFoundError, ValueError) as err:
        # RecBole's search ends in its exlib package, whose import needs lightgbm/xgboost: an
        # unknown name surfaces as "No module named 'lightgbm'" unless said plainly here
        raise ValueError(
            f"unknown model '{name}': not a plugin model ({', '.join(MODELS)}) "
            f"nor a RecBole model that can be imported here (RecBole said: {err})"
        ) from None
