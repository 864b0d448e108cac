"""Open a saved RecBole checkpoint for the tools that read one (``export.py``, ``inspect.py``).

The checkpoint is first read with ``torch.load(weights_only=True)`` (the plugin's
``compat.py`` section 2 makes RecBole's checkpoints load that way) only to check it
and to turn the usual mistakes into one clear :class:`CheckpointError` naming the file:
no such file, a file torch cannot read as weights-only data, a file that is not a
RecBole checkpoint, a checkpoint whose dataset is not where its config says. Then
RecBole's own :func:`recbole.quick_start.load_data_and_model` rebuilds the dataset,
its split and the model, exactly as RecBole does it (the same ``weights_only`` load).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch

from recbole_metammf.errors import UserError


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be used; the message names the file and the problem."""


@dataclass
class Loaded:
    """What :func:`load_checkpoint` returns (RecBole's six objects, named)."""

    config: object
    model: torch.nn.Module
    dataset: object
    train_data: object
    valid_data: object
    test_data: object


def read_checkpoint(path: str) -> dict:
    """The checkpoint's contents (weights-only), checked to be a RecBole checkpoint."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (any unreadable file: one line, not a traceback)
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path}: not a checkpoint torch can load with weights_only=True ({first[:200]})"
        ) from None
    if not isinstance(state, dict) or "config" not in state or "state_dict" not in state:
        raise CheckpointError(f"{path}: not a RecBole checkpoint (no 'config' and 'state_dict' entries)")
    return state


def checkpoint_model_name(state: dict) -> str:
    return str(state["config"]["model"])


def load_checkpoint(
    path: str, models: tuple[str, ...] | None = None, purpose: str = "this tool", quiet: bool = True
) -> Loaded:
    """Config, model (in eval mode, on the config's device), dataset and the three splits.

    ``models``: the model names ``purpose`` can read; any other is refused before the dataset
    is built. ``quiet``: RecBole's INFO logging (the config, the dataset) is held back meanwhile.
    """
    from recbole.quick_start import load_data_and_model

    # The plugin's models, metrics and weights-only loading path are registered already: importing this
    # module (recbole_metammf.checkpoint) ran recbole_metammf/__init__.py first.

    state = read_checkpoint(path)
    config = state["config"]
    if models is not None and checkpoint_model_name(state) not in models:
        raise CheckpointError(
            f"{path}: holds a {checkpoint_model_name(state)} model; {purpose} reads {' / '.join(models)} checkpoints"
        )
    data_dir = config["data_path"]  # RecBole's final data_path: {data_path}/{dataset}
    if not os.path.isdir(data_dir):
        raise CheckpointError(
            f"{path}: its dataset '{config['dataset']}' is not at {data_dir} (the data_path it was "
            f"trained with, taken from {os.getcwd()} when relative): run from the training directory"
        )
    del state
    previous = logging.root.manager.disable
    if quiet:  # RecBole logs the whole config and dataset at INFO while it rebuilds them
        logging.disable(logging.INFO)
    try:
        config, model, dataset, train, valid, test = load_data_and_model(path)
    except RuntimeError as err:  # load_state_dict: sizes that do not match the dataset as it is now
        first = str(err).strip().splitlines()[0]
        raise CheckpointError(
            f"{path}: the model does not match dataset '{config['dataset']}' at {data_dir} "
            f"(changed since training?): {first[:200]}"
        ) from None
    finally:
        logging.disable(previous)
    model.eval()
    return Loaded(config, model, dataset, train, valid, test)
