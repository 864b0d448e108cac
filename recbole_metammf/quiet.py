"""Known third-party warnings that bury a run's own lines, filtered narrowly.

A normal run on today's stack prints, above the lines that matter:

* ``UserWarning: pkg_resources is deprecated``: Ray 2.6 imports ``pkg_resources``
  (RecBole's quick start imports ``ray.tune``);
* RecBole 1.2.1's ``FutureWarning``\\ s: pandas' chained-assignment and
  ``Series.agg(len)`` deprecations in its dataset loader, torch's
  ``torch.cuda.amp.GradScaler`` deprecation in its trainer;
* torch's ``UserWarning``\\ s on building a sparse CSR tensor (its beta status, its
  invariant checks left at their default), raised where the plugin's graph layer
  builds its constant operators.

Each filter names the category, the message and the module the warning is
attributed to, so the same warnings from the user's own code, and every other
warning, still show. :func:`install` runs at ``import recbole_metammf``, before
RecBole and Ray are imported; it does nothing when the user chose warning
filters themselves (``python -W ...`` or ``PYTHONWARNINGS``).
"""

import sys
import warnings

# (category, message regex, module regex) of every filtered warning
KNOWN_WARNINGS = (
    (UserWarning, r"pkg_resources is deprecated as an API", r"ray\."),
    (FutureWarning, r"A value is trying to be set on a copy of a DataFrame", r"recbole\.data\."),
    (FutureWarning, r"using <built-in function len> in Series\.agg", r"recbole\.data\."),
    (FutureWarning, r"`torch\.cuda\.amp\.GradScaler\(args\.\.\.\)` is deprecated", r"recbole\.trainer\."),
    (UserWarning, r"Sparse CSR tensor support is in beta state", r"recbole_metammf\.layers\."),
    (UserWarning, r"Sparse invariant checks are implicitly disabled", r"recbole_metammf\.layers\."),
)


def install() -> bool:
    """Add the filters (once); False when the user set warning options, which then stay in charge."""
    if sys.warnoptions:
        return False
    for category, message, module in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    return True
