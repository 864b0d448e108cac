"""Every random state a RecBole run draws from, captured and restored as one value.

Two places need the whole set: the best-test-epoch diagnostic (``evaluation.py``) evaluates test between
training epochs and must leave training's draws as they were, and a resumable trial
(``benchmark/resume.py``) saves them in its snapshot to go on where it stopped. The set is Python's
``random``, numpy's global generator, torch's CPU generator, every CUDA device's generator when CUDA is
there (a model on the GPU draws its dropout masks and noise there), and a loader's own
``torch.Generator`` if one is passed (RecBole's training loader shuffles with it).

:func:`capture` returns plain values and tensors only, so a snapshot holding it loads with
``torch.load(..., weights_only=True)``: numpy's key array travels as an int64 tensor.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def capture(generator: torch.Generator | None = None) -> dict:
    """The random states now: ``python``, ``numpy``, ``torch``, ``cuda`` (with CUDA) and ``loader`` (with
    ``generator``)."""
    version, key, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": {"version": version, "key": list(key), "gauss": gauss},
             "numpy": {"name": name, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached": float(cached)},
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if isinstance(generator, torch.Generator):
        state["loader"] = generator.get_state()
    return state


def restore(state: dict, generator: torch.Generator | None = None) -> None:
    """Set the random states :func:`capture` returned (``loader`` into ``generator``, when both are there)."""
    p = state["python"]
    random.setstate((p["version"], tuple(p["key"]), p["gauss"]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "loader" in state:
        if not isinstance(generator, torch.Generator):  # a resumed run would shuffle differently, silently
            raise ValueError("the random states hold a loader generator's state, but no generator was given")
        generator.set_state(state["loader"])
