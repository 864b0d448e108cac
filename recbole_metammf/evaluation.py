"""The literature's way of testing, beside RecBole's: which items are masked at test, and a diagnostic.

Two config keys (``properties/overall.yaml``), both leaving validation exactly as RecBole runs it:

* ``test_mask``: the items removed from each test user's full ranking. ``train+valid``
  (default) is RecBole's: every item of the user's training *and* validation interactions.
  ``train`` is what MMRec's and DiffMM's code do: only the training items are removed, so a
  user's validation items stay in the ranking (as non-relevant items). It matters only when
  users have interactions in both the validation and the test split. Implemented where RecBole
  builds the mask: RecBole's ``FullSortEvalDataLoader`` keeps, per user, the history items to
  mask (``uid2history_item``); for the test loader (its sampler's phase is ``test``) and
  ``test_mask: train``, :func:`apply_test_mask` replaces that table with the user's training
  items (again minus the user's test items, as RecBole's ``used - positive``). The loader is
  wrapped in ``compat.py`` section 7; the change is decided by each loader's own config, so one
  run's choice never reaches another run in the same process.

* ``diagnose_best_test_epoch``: evaluates the test split after every validation evaluation
  (:class:`TestEpochDiagnostic`) and reports, *beside* the validation-selected result, the best
  test score over the epochs with its epoch: the selection DiffMM's code makes (it never loads
  the validation matrix and prints the highest test Recall over the epochs). A diagnostic for
  lining published figures up with ours, never a result: it chooses the epoch on the test split.
  The reported test result stays the one of the best-validation checkpoint, and is the same with
  the diagnostic on or off (the random states are restored after each diagnostic evaluation).
"""

from __future__ import annotations

import time
from logging import getLogger

import numpy as np
import torch

from recbole_metammf import rng

TEST_MASKS = ("train+valid", "train")
DEFAULT_TEST_MASK = "train+valid"

DIAGNOSTIC_KEY = "diagnostic_best_test_over_epochs"
DIAGNOSTIC_LABEL = "best test over epochs (diagnostic, DiffMM-style selection: the epoch is chosen on test; not a result)"


# ----------------------------------------------------------------------------
# test_mask
# ----------------------------------------------------------------------------
def test_mask_of(config) -> str:
    """The run's ``test_mask`` (RecBole's ``train+valid`` when the key is absent)."""
    value = config["test_mask"] if "test_mask" in config else None
    return DEFAULT_TEST_MASK if value is None else str(value)


def _training_interactions(loader):
    """(user ids, item ids) of the training split, from the loader's sampler (RecBole's ``Sampler`` keeps
    every phase's dataset); a ValueError for a sampler that does not (e.g. the sequential models')."""
    sampler = loader._sampler
    datasets, phases = getattr(sampler, "datasets", None), getattr(sampler, "phases", None)
    if datasets is None or phases is None or "train" not in phases:
        raise ValueError(
            f"test_mask: train needs the training split in the test loader's sampler, and "
            f"{type(sampler).__name__} does not keep it (use test_mask: {DEFAULT_TEST_MASK})"
        )
    train = datasets[list(phases).index("train")]
    return (train.inter_feat[loader.uid_field].numpy().astype(np.int64),
            train.inter_feat[loader.iid_field].numpy().astype(np.int64))


def training_history(loader) -> np.ndarray:
    """The ``uid2history_item`` table with ``test_mask: train``: for each user of the test loader, the
    items of their training interactions that are not among their test items; None for other users."""
    uids, iids = _training_interactions(loader)
    n_users = len(loader.uid2history_item)
    order = np.argsort(uids, kind="stable")
    items = iids[order]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(uids, minlength=n_users))])
    history = np.array([None] * n_users)
    for u in loader.uid_list.tolist():
        known = np.unique(items[indptr[u]:indptr[u + 1]])
        known = known[~np.isin(known, loader.uid2positive_item[u].numpy())]
        history[u] = torch.from_numpy(known)
    return history


def apply_test_mask(loader, config) -> None:
    """Select the history table of a full-sort test loader after ``config``'s ``test_mask``.

    RecBole's own table is kept, so that a loader whose config changes (RecBole's
    ``update_config``, saved dataloaders) can go back to it. Validation loaders and sequential
    models' loaders are left as RecBole built them.
    """
    if loader.is_sequential or getattr(loader._sampler, "phase", None) != "test":
        return
    mask = test_mask_of(config)
    if mask not in TEST_MASKS:
        raise ValueError(f"test_mask must be one of {', '.join(TEST_MASKS)}, got '{mask}'")
    histories = loader.__dict__.setdefault("_metammf_histories", {DEFAULT_TEST_MASK: loader.uid2history_item})
    if mask not in histories:
        histories[mask] = training_history(loader)
    loader.uid2history_item = histories[mask]
    loader.test_mask = mask


# ----------------------------------------------------------------------------
# the best-test-epoch diagnostic
# ----------------------------------------------------------------------------
def diagnostic_requested(config) -> bool:
    return bool(config["diagnose_best_test_epoch"]) if "diagnose_best_test_epoch" in config else False


class TestEpochDiagnostic:
    """Evaluates ``test_data`` each time ``trainer`` validates, and tells the best test epoch.

    Wraps the trainer *instance*'s ``_valid_epoch`` (the class is left alone): after the
    validation evaluation of an epoch, the same model state is evaluated on the test split
    with RecBole's own ``Trainer.evaluate``, the random states (Python, numpy, torch and CUDA's: ``rng.py``) saved
    before and restored after, so training goes on exactly as without the diagnostic. The
    epoch index comes from RecBole's ``callback_fn(epoch_idx, valid_score)``: pass this object
    as (or call it from) the callback. ``metric`` (default: the run's ``valid_metric``) is the
    test metric whose best epoch is reported, the full test result of that epoch with it.
    """

    def __init__(self, trainer, test_data, metric: str | None = None):
        self.trainer = trainer
        self.test_data = test_data
        self.metric = (metric or trainer.config["valid_metric"]).lower()
        self.curve: list[dict] = []  # {"epoch", "result"} per validation evaluation
        self.valid_selected_epoch: int | None = None
        self.time_s = 0.0
        self._pending = None
        original = trainer._valid_epoch

        def _valid_epoch(valid_data, show_progress=False):
            out = original(valid_data, show_progress=show_progress)
            self._pending = self._evaluate_test()
            return out

        trainer._valid_epoch = _valid_epoch

    def _evaluate_test(self) -> dict:
        start = time.perf_counter()
        state = rng.capture()
        try:
            result = self.trainer.evaluate(self.test_data, load_best_model=False, show_progress=False)
        finally:
            rng.restore(state)
        self.time_s += time.perf_counter() - start
        return {k: float(v) for k, v in dict(result).items()}

    def __call__(self, epoch_idx: int, valid_score: float) -> None:
        if self._pending is None:
            return
        self.curve.append({"epoch": int(epoch_idx), "result": self._pending})
        if self.trainer.cur_step == 0:  # early stopping reset its counter: the new best validation epoch
            self.valid_selected_epoch = int(epoch_idx)
        getLogger().info(f"epoch {epoch_idx} test (diagnostic, not used for selection): "
                         f"{self.metric} {self._pending.get(self.metric, float('nan')):.4f}")
        self._pending = None

    def summary(self) -> dict | None:
        """The diagnostic as plain data (None before any evaluation): the best test epoch by ``metric``
        (the first on a tie, as DiffMM's ``>``), its full test result, the validation-selected epoch and
        the test result of every evaluated epoch."""
        if not self.curve:
            return None
        scored = [p for p in self.curve if self.metric in p["result"]]
        if not scored:
            raise ValueError(f"diagnose_best_test_epoch: the test results have no '{self.metric}'")
        best = max(scored, key=lambda p: p["result"][self.metric])  # max() keeps the first of equals
        return {
            "label": DIAGNOSTIC_LABEL,
            "metric": self.metric,
            "best_test_epoch": best["epoch"],
            "best_test_result": dict(best["result"]),
            "valid_selected_epoch": self.valid_selected_epoch,
            "test_mask": test_mask_of(self.trainer.config),
            "test_time_s": round(self.time_s, 3),
            "test_curve": self.curve,
        }


def format_diagnostic(summary: dict, keys=None) -> list[str]:
    """Printed lines for a run's diagnostic (``keys``: the metrics to show, default all)."""
    result = summary["best_test_result"]
    lines = [f"{summary['label'][0].upper()}{summary['label'][1:]}:",
             f"  epoch {summary['best_test_epoch']} by test {summary['metric']} "
             f"(the reported result above: the best-validation epoch {summary['valid_selected_epoch']})"]
    lines += [f"  {k:>14s}: {result[k]:.4f}" for k in (keys or result) if k in result]
    return lines
