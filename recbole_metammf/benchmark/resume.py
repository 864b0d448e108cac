"""Resumable trials: a trial stopped in mid-training (a session's end, a lost node, Ctrl-C) goes on from
its last saved epoch when the same trial runs again, to the result it would have had without the stop.

While a trial trains (:func:`activate` gave it a folder), RecBole's ``Trainer`` keeps, at the start of
an epoch (at most every ``every_s`` seconds, and never mid-epoch) a *snapshot* in that folder:

* the model's state (``state_dict``), RecBole's optimiser's, and the model's own training attributes
  that are not parameters or buffers (DiffMM's step counter and its denoisers' optimiser, say: plain
  values, dense tensors and optimisers, found on every submodule);
* every random state the epoch will draw from: Python's, numpy's, torch's (and CUDA's), and the
  training loader's own generator (RecBole shuffles with it);
* the best checkpoint so far (RecBole's file, copied);
* a log of what every earlier epoch returned to RecBole's ``fit`` loop: its training loss, its
  validation result and any other evaluation made during ``fit`` (the trial's test diagnostic).

A rerun of the trial *replays* that log through RecBole's own ``fit`` loop: each logged epoch's
``_train_epoch``, ``_valid_epoch`` and ``evaluate`` return their logged values without training or
evaluating, so early stopping, the trial's curve recorder and its diagnostic see the same epochs in the
same order and end in the same state (their counters are checked against the snapshot's). When the log
is used up, the snapshot is restored and training goes on. Nothing is computed differently:
``tests/test_resume.py`` stops trials after an epoch and resumes them, and gets the uninterrupted
trial's curves, losses and test result to the last digit, for every model.

The files are written by this process for this process; they are read with ``torch.load(...,
weights_only=True)`` (no pickled code). The runner names the folder after the trial and its
fingerprint, so a snapshot of other code, data or config is never resumed, and removes it once the
trial's record is written. Only ``recbole.trainer.Trainer`` and subclasses that keep its ``fit`` loop and
epoch methods are covered; a trainer with a ``fit`` or an epoch of its own trains from the start as before.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from logging import getLogger

import torch

from recbole_metammf import rng

SNAPSHOT = "state.pt"
EVERY_S = 300.0  # default: at most one snapshot per 5 minutes of training (a DiffMM epoch is ~95 s)

_folder: str | None = None
_every_s: float = EVERY_S
_info: dict = {}
_installed = False


class ResumeError(RuntimeError):
    """A snapshot that cannot be resumed exactly (the replayed run does not meet it)."""


def activate(folder: str, every_s: float = EVERY_S) -> None:
    """Make the next ``Trainer.fit`` of this process resumable, its state kept in ``folder``."""
    global _folder, _every_s
    install()
    _folder, _every_s = folder, float(every_s)
    _info.clear()


def deactivate() -> dict:
    """Stop keeping state; how the last fit resumed: ``{"resumed_at_epoch", "earlier_train_s",
    "earlier_valid_s"}``, or {} for a fit that started from the beginning."""
    global _folder
    _folder = None
    info = dict(_info)
    _info.clear()
    return info


# --- random states -------------------------------------------------------------------------------
def _rng_state(train_data) -> dict:
    return rng.capture(getattr(train_data, "generator", None))


def _set_rng_state(state: dict, train_data) -> None:
    rng.restore(state, getattr(train_data, "generator", None))


# --- the model's own training attributes ---------------------------------------------------------
_MODULE_KEYS = set(vars(torch.nn.Module()))


def _extras(model: torch.nn.Module) -> dict:
    """Every submodule's attributes that are not parameters, buffers or submodules and that training may
    change: plain values, dense tensors, optimisers (by parameter name). Other objects (scipy matrices,
    sparse graphs, data) are built from the dataset and never change, so they are left to the constructor."""
    names = {id(p): n for n, p in model.named_parameters()}
    out = {}
    for prefix, module in model.named_modules():
        for key, value in vars(module).items():
            if key in _MODULE_KEYS:
                continue
            name = f"{prefix}.{key}" if prefix else key
            if value is None or isinstance(value, (bool, int, float, str)):
                out[name] = {"kind": "value", "value": value}
            elif isinstance(value, torch.Tensor) and not isinstance(value, torch.nn.Parameter) \
                    and value.layout == torch.strided:
                out[name] = {"kind": "tensor", "value": value.detach().clone()}
            elif isinstance(value, torch.optim.Optimizer):
                groups = [[names[id(p)] for p in g["params"]] for g in value.param_groups]
                out[name] = {"kind": "optimizer", "class": type(value).__name__, "groups": groups,
                             "defaults": {k: v for k, v in value.defaults.items()
                                          if v is None or isinstance(v, (bool, int, float, str))},
                             "state": value.state_dict()}
    return out


def _set_extras(model: torch.nn.Module, extras: dict) -> None:
    params = dict(model.named_parameters())
    modules = dict(model.named_modules())
    for name, item in extras.items():
        prefix, _, key = name.rpartition(".")
        module = modules[prefix]
        current = getattr(module, key, None)
        if item["kind"] in ("value", "tensor"):
            value = item["value"]
            if isinstance(value, torch.Tensor) and isinstance(current, torch.Tensor):
                value = value.to(current.device)
            setattr(module, key, value)
            continue
        if not isinstance(current, torch.optim.Optimizer):  # made lazily (DiffMM's, at its first diffusion step)
            cls = getattr(torch.optim, item["class"])
            current = cls([{"params": [params[n] for n in group]} for group in item["groups"]], **item["defaults"])
            setattr(module, key, current)
        current.load_state_dict(item["state"])


# --- one fit ---------------------------------------------------------------------------------------
class _Run:
    """The resumable state of one ``Trainer.fit`` call."""

    def __init__(self, trainer, train_data, folder: str, every_s: float):
        self.trainer, self.train_data, self.folder, self.every_s = trainer, train_data, folder, every_s
        self.log: list = []  # events since the start: ["train", epoch, loss] | ["valid", score, result] | ["evaluate", result]
        self.replay: list = []
        self.cursor = 0
        self.snapshot = None
        self.inside_valid = False
        self.best_file = None  # the file in ``folder`` holding the best checkpoint so far
        self.best_dirty = False
        self.last_save = time.monotonic()
        self.train_s = self.valid_s = 0.0  # this run's, added to the earlier runs' in each snapshot
        self.earlier = {"train_s": 0.0, "valid_s": 0.0}
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, SNAPSHOT)
        if os.path.isfile(path):
            try:
                self.snapshot = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as err:  # noqa: BLE001  (a damaged file: start afresh, say so)
                raise ResumeError(f"{path}: cannot be read as a snapshot ({type(err).__name__}: {err}); "
                                  f"remove {folder} to start the trial afresh") from None
            self.replay = json.loads(self.snapshot["log"])
            self.best_file = self.snapshot.get("best_file")
            self.earlier = self.snapshot.get("times", self.earlier)
            getLogger().info(f"resuming from {path}: epochs 0-{int(self.snapshot['epoch']) - 1} are replayed from its "
                             f"log (their lines below show 0.00 s), training goes on at epoch {int(self.snapshot['epoch'])}")
            _info.update(resumed_at_epoch=int(self.snapshot["epoch"]),
                         earlier_train_s=round(self.earlier["train_s"], 3),
                         earlier_valid_s=round(self.earlier["valid_s"], 3))

    # the log, replayed
    def replaying(self) -> bool:
        return self.cursor < len(self.replay)

    def pop(self, kind: str):
        event = self.replay[self.cursor]
        if event[0] != kind:
            raise ResumeError(f"{self.folder}: the replayed run asked for {kind} where the log has {event[0]} "
                              f"(event {self.cursor}); remove the folder to start the trial afresh")
        self.cursor += 1
        self.log.append(event)
        return event

    def record(self, event: list) -> None:
        self.log.append(event)

    # the snapshot
    def restore(self) -> None:
        """At the start of the first epoch past the log: the snapshot's state, checked against the replay's."""
        s, t = self.snapshot, self.trainer
        if s is None:
            return
        self.snapshot = None
        mine = {"cur_step": int(t.cur_step), "best_valid_score": float(t.best_valid_score),
                "epochs": len(t.train_loss_dict)}
        if mine != s["trainer"]:
            raise ResumeError(f"{self.folder}: the replayed run ends in {mine}, the snapshot was taken at "
                              f"{s['trainer']}; remove the folder to start the trial afresh")
        t.model.load_state_dict(s["model"])
        t.optimizer.load_state_dict(s["optimizer"])
        _set_extras(t.model, s["extras"])
        _set_rng_state(s["rng"], self.train_data)
        if self.best_file:
            shutil.copyfile(os.path.join(self.folder, self.best_file), t.saved_model_file)

    def maybe_save(self, epoch: int) -> None:
        if self.every_s is None or time.monotonic() - self.last_save < self.every_s:
            return
        try:
            self._save(epoch)
        except OSError as err:  # a full disk costs the resumability, not the trial
            getLogger().warning(f"{self.folder}: snapshot not written ({err}); this trial goes on without them")
            self.every_s = None

    def _save(self, epoch: int) -> None:
        t = self.trainer
        if self.best_dirty and os.path.isfile(t.saved_model_file):  # the checkpoint first, under a new name
            name = f"best-{epoch}.pth"
            shutil.copyfile(t.saved_model_file, os.path.join(self.folder, name + ".tmp"))
            os.replace(os.path.join(self.folder, name + ".tmp"), os.path.join(self.folder, name))
            old, self.best_file, self.best_dirty = self.best_file, name, False
        else:
            old = None
        state = {"epoch": int(epoch), "log": json.dumps(self.log),
                 "trainer": {"cur_step": int(t.cur_step), "best_valid_score": float(t.best_valid_score),
                             "epochs": len(t.train_loss_dict)},
                 "model": t.model.state_dict(), "optimizer": t.optimizer.state_dict(),
                 "extras": _extras(t.model), "rng": _rng_state(self.train_data), "best_file": self.best_file,
                 "times": {"train_s": self.earlier["train_s"] + self.train_s,
                           "valid_s": self.earlier["valid_s"] + self.valid_s}}
        path = os.path.join(self.folder, SNAPSHOT)
        torch.save(state, path + ".tmp")
        os.replace(path + ".tmp", path)  # the snapshot names its checkpoint: an older one can go now
        if old and old != self.best_file:
            os.remove(os.path.join(self.folder, old))
        self.last_save = time.monotonic()


# --- the patches -----------------------------------------------------------------------------------
def install() -> None:
    """Wrap ``recbole.trainer.Trainer``'s ``fit``, ``_train_epoch``, ``_valid_epoch``, ``evaluate`` and
    ``_save_checkpoint`` (once per process); without :func:`activate` they only call the originals."""
    global _installed
    if _installed:
        return
    from recbole.trainer import Trainer

    fit, train_epoch, valid_epoch = Trainer.fit, Trainer._train_epoch, Trainer._valid_epoch
    evaluate, save_checkpoint = Trainer.evaluate, Trainer._save_checkpoint

    def _run(trainer):
        return trainer.__dict__.get("_resume_run")

    def patched_fit(self, train_data, valid_data=None, verbose=True, saved=True, show_progress=False,
                    callback_fn=None):
        cls = type(self)
        if _folder is None or (cls.fit, cls._train_epoch, cls._valid_epoch, cls.evaluate, cls._save_checkpoint) != \
                (patched_fit, patched_train_epoch, patched_valid_epoch, patched_evaluate, patched_save_checkpoint):
            # a trainer with its own loop or epoch (RecBole's KG / tree trainers): trained from the start as before
            return fit(self, train_data, valid_data, verbose, saved, show_progress, callback_fn)
        run = _Run(self, train_data, _folder, _every_s)
        self.__dict__["_resume_run"] = run
        try:
            out = fit(self, train_data, valid_data, verbose, saved, show_progress, callback_fn)
            if run.replaying():
                raise ResumeError(f"{run.folder}: training ended before the log did (event {run.cursor} of "
                                  f"{len(run.replay)}); remove the folder to start the trial afresh")
            return out
        finally:
            del self.__dict__["_resume_run"]

    def patched_train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
        run = _run(self)
        if run is None:
            return train_epoch(self, train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        if run.replaying():
            loss = run.pop("train")[2]
            return tuple(loss) if isinstance(loss, list) else loss
        run.restore()
        run.maybe_save(epoch_idx)  # the state before this epoch, the log up to it
        start = time.perf_counter()
        loss = train_epoch(self, train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)
        run.train_s += time.perf_counter() - start
        value = [float(x) for x in loss] if isinstance(loss, tuple) else float(loss)
        run.record(["train", int(epoch_idx), value])
        return loss

    def patched_valid_epoch(self, valid_data, show_progress=False):
        run = _run(self)
        if run is None:
            return valid_epoch(self, valid_data, show_progress=show_progress)
        if run.replaying():
            _, score, result = run.pop("valid")
            return score, result
        start = time.perf_counter()
        run.inside_valid = True
        try:
            score, result = valid_epoch(self, valid_data, show_progress=show_progress)
        finally:
            run.inside_valid = False
        run.valid_s += time.perf_counter() - start
        run.record(["valid", float(score), {k: float(v) for k, v in dict(result).items()}])
        return score, result

    def patched_evaluate(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        run = _run(self)
        if run is None or run.inside_valid:
            return evaluate(self, eval_data, load_best_model, model_file, show_progress)
        if run.replaying():
            return run.pop("evaluate")[1]
        result = evaluate(self, eval_data, load_best_model, model_file, show_progress)
        run.record(["evaluate", {k: float(v) for k, v in dict(result).items()}])
        return result

    def patched_save_checkpoint(self, epoch, verbose=True, **kwargs):
        run = _run(self)
        if run is not None and run.replaying():
            return None  # the snapshot's copy is put in place when the replay ends
        out = save_checkpoint(self, epoch, verbose=verbose, **kwargs)
        if run is not None:
            run.best_dirty = True
        return out

    Trainer.fit, Trainer._train_epoch, Trainer._valid_epoch = patched_fit, patched_train_epoch, patched_valid_epoch
    Trainer.evaluate, Trainer._save_checkpoint = patched_evaluate, patched_save_checkpoint
    _installed = True
