"""Search spaces in RecBole's ``.hyper`` format, one parameter a line (``hyper/*.hyper``)::

    learning_rate loguniform -8 0        # bounds in log space: exp(-8) .. exp(0)
    embedding_size choice [32,64]
    dropout uniform 0.0 0.5
    reg_weight quniform 0 1 0.1

read by the tuned mode's planner (:mod:`.tune`) and by ``run_hyper.py``'s search (:mod:`.hyper`).
"""

from __future__ import annotations

import yaml


def parse_space(params_file: str) -> dict:
    """``{name: (kind, args)}`` from a RecBole ``.hyper`` file (the same grammar HyperTuning reads)."""
    space = {}
    with open(params_file) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            name, kind, rest = line.split(maxsplit=2)
            if kind == "choice":
                args = _choice_values(rest)
                if not isinstance(args, list):
                    raise ValueError(f"{params_file}: 'choice' needs a list: {line!r}")
            elif kind in ("uniform", "loguniform", "quniform"):
                args = [float(x) for x in rest.split()]
            else:
                raise ValueError(f"{params_file}: unknown distribution {kind!r} in {line!r}")
            space[name] = (kind, args)
    return space


def _choice_values(text: str):
    """A ``choice`` list as RecBole's HyperTuning reads it (a Python literal: ``[1e-5,'cp',[0.5,0.2]]``).

    ``ast.literal_eval`` is the safe form of the ``eval`` RecBole uses; YAML alone would read ``1e-5``
    as the *string* '1e-5' (YAML 1.1 floats need a dot), which a model would then fail to multiply.
    """
    import ast

    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return yaml.safe_load(text)  # unquoted words, as a YAML flow list: [cp, full]


def _plain(v):
    """numpy scalars / lists -> plain Python values."""
    if hasattr(v, "item"):
        return v.item()
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v
