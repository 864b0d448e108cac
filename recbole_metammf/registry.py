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
    "BM3": "recbole_metammf.model.bm3",
    "MGCN": "recbole_metammf.model.mgcn",
    "LGMRec": "recbole_metammf.model.lgmrec",
    "DRAGON": "recbole_metammf.model.dragon",
    "DiffMM": "recbole_metammf.model.diffmm",
}

_RECBOLE_PACKAGE = "recbole.model.general_recommender"


def register(name: str, module_path: str) -> type:
    """Expose ``module_path`` to RecBole under ``name`` and return the class."""
    module = importlib.import_module(module_path)
    sys.modules[f"{_RECBOLE_PACKAGE}.{name.lower()}"] = module
    return getattr(module, name)


def register_all() -> dict:
    return {name: register(name, path) for name, path in MODELS.items()}


def recbole_model_names() -> list[str]:
    """RecBole's model names, as its ``properties/model/<Name>.yaml`` spell them."""
    import os

    from recbole.config import configurator

    folder = os.path.join(os.path.dirname(os.path.realpath(configurator.__file__)), "..", "properties", "model")
    return sorted(os.path.splitext(f)[0] for f in os.listdir(folder) if f.endswith(".yaml"))


def closest(name: str, candidates, n: int = 3) -> list[str]:
    """Up to ``n`` of ``candidates`` closest to ``name`` (difflib, case-insensitive), best first."""
    import difflib

    by_lower = {}
    for c in candidates:
        by_lower.setdefault(c.lower(), c)
    return [by_lower[m] for m in difflib.get_close_matches(name.lower(), list(by_lower), n=n, cutoff=0.5)]


def get_model(name: str) -> type:
    """The class of a plugin or RecBole model by name, or an :class:`UnknownModelError` naming the closest ones."""
    from recbole.utils import get_model as recbole_get_model

    from recbole_metammf.errors import UnknownModelError

    known = [*MODELS, *recbole_model_names()]
    if name in known:
        return recbole_get_model(name)  # a known model that fails to import is a real problem: its own error
    try:
        return recbole_get_model(name)  # e.g. a RecBole model without a YAML, or one registered by the user
    except (ModuleNotFoundError, ValueError, AttributeError):
        # RecBole's search ends in its exlib package, whose import needs lightgbm/xgboost (an unknown
        # name surfaces as "No module named 'lightgbm'"), and a name in the wrong case finds the module
        # but not the class (AttributeError): say it plainly, with the names that come closest
        pass
    suggestions = closest(name, known)
    hint = f"did you mean {' or '.join(suggestions)}? " if suggestions else ""
    raise UnknownModelError(
        f"unknown model '{name}': {hint}(the plugin's models: {', '.join(MODELS)}; "
        f"RecBole's: the names of recbole/properties/model/*.yaml, e.g. BPR, LightGCN)"
    ) from None
