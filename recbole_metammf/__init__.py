"""recbole-metammf: MetaMMF (item-specific multimodal fusion via meta-learning) for RecBole.

``import recbole_metammf`` makes RecBole's own machinery find the plugin's
models and metrics by name and apply the plugin's YAML defaults (see
``compat.py`` for every change this makes to RecBole, and why).
"""

from recbole_metammf import quiet as _quiet

_quiet.install()  # before RecBole and Ray are imported: their known deprecation noise (see quiet.py)

from recbole_metammf import compat as _compat  # noqa: E402

_compat.apply()

from recbole_metammf.metrics import HR, register_metrics  # noqa: E402
from recbole_metammf.registry import MODELS, get_model, register_all  # noqa: E402

register_metrics()
_MODEL_CLASSES = register_all()
globals().update(_MODEL_CLASSES)

from recbole_metammf.quick_start import objective_function, run  # noqa: E402

__version__ = "0.1.0"
__all__ = ["run", "objective_function", "get_model", "MODELS", "HR", *_MODEL_CLASSES]
