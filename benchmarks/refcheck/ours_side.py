"""Our side of the reference check: the config our models are given, the run (resumable, in its own process) and
its driver (``reference_check.py ours-driver``)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import statistics
import sys

from . import shared


def parse_recbole_epoch_times(text: str) -> list[float]:
    """Training seconds of every epoch from RecBole's log lines ("epoch N training [time: X s, ..."), in epoch
    order. The log of a resumed run (``recbole_metammf.benchmark.resume``) holds the stopped run's lines, then
    a line saying at which epoch training goes on and the replayed lines of the epochs before it (0.00 s,
    skipped): each epoch's time is that of the run that trained it last. An epoch 0 trained anew (a run that
    started over) drops what came before it."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    times: dict[int, float] = {}
    replayed_below = 0
    for match in re.finditer(r"training goes on at epoch (\d+)|epoch (\d+) training \[time: ([0-9.]+)s", text):
        if match.group(1) is not None:
            replayed_below = int(match.group(1))
            continue
        epoch = int(match.group(2))
        if epoch < replayed_below:
            continue
        if epoch == 0:
            times.clear()
        times[epoch] = float(match.group(3))
    return [times[e] for e in sorted(times)]


def ours_overrides(data_path: str) -> dict:
    """What our side is given besides the model YAML: the data, and the literature's test mask when the
    plugin has that key (MMRec masks only training items at test)."""
    import yaml

    out = {"data_path": os.path.abspath(data_path)}
    with open(os.path.join(shared.REPO, "properties", "overall.yaml")) as f:
        if "test_mask" in (yaml.safe_load(f) or {}):
            out["test_mask"] = "train"
    return out


def ours_config(model: str, data_path: str, extra: dict) -> dict:
    """Everything our side of ``model`` is given besides its YAMLs: the data and test mask, the model's
    ``ours_set``, then ``--set``."""
    return {**ours_overrides(data_path), **shared.MODELS[model].get("ours_set", {}), **extra}


def resolve_ours(model: str, data_path: str, extra: dict) -> dict:
    """Our resolved config for ``model`` on the dataset (RecBole's Config, no data loaded)."""
    sys.path.insert(0, shared.REPO)
    import recbole_metammf  # noqa: F401
    from recbole.config import Config

    sys.argv = sys.argv[:1]  # RecBole's Config also reads the command line
    cfg = Config(model=shared.MODELS[model]["ours"], dataset=shared.DATASET, config_dict=ours_config(model, data_path, extra))
    return {k: v for k, v in cfg.final_config_dict.items() if isinstance(v, (int, float, str, list, dict, type(None)))}


# Changes to ours for a run (`--ours-patch NAME`, with a --tag), applied in the ours-driver's process only: the
# package is untouched. The converse of a reference patch: ours run as the reference does something.
OURS_PATCHES = {
    # RecBole's sampler draws training negatives from every item; MMRec's loader from the items with a training row
    "trained-item-negatives": "negatives drawn only from the items with a training row, as MMRec's loader "
                              "(RecBole: from every item)",
}


def apply_ours_patch(name: str) -> None:
    """Apply :data:`OURS_PATCHES` ``name`` in this process (the ours-driver, before RecBole builds anything)."""
    if name not in OURS_PATCHES:
        raise ValueError(f"unknown ours patch {name!r}; known: {sorted(OURS_PATCHES)}")
    import numpy as np
    from recbole.sampler import Sampler

    def _uni_sampling(self, sample_num):  # uniform over the items of the train phase's interactions
        if getattr(self, "_refcheck_trained_items", None) is None:
            train = self.datasets[self.phases.index("train")] if "train" in self.phases else self.datasets[0]
            self._refcheck_trained_items = np.unique(train.inter_feat[self.iid_field].numpy())
        items = self._refcheck_trained_items
        return items[np.random.randint(0, len(items), sample_num)]

    Sampler._uni_sampling = _uni_sampling


def ours_snapshot_folder(workdir: str, label: str, seed: int, ours_model: str, overrides: dict,
                         patch: str | None = None) -> str:
    """Where an ours run keeps its resume snapshots: named after the row, the seed and a key of the code and
    config it runs, so a snapshot of other code or settings is never resumed (other keys' folders of the same
    run are removed: they never can be)."""
    key = [ours_model, ours_code_digest(ours_model), overrides] + ([patch] if patch else [])  # unpatched: as before
    key = hashlib.sha256(json.dumps(key, sort_keys=True).encode())
    root = os.path.join(workdir, ".resume")
    os.makedirs(root, exist_ok=True)
    prefix = f"{label}__seed{seed}__"
    folder = os.path.join(root, prefix + key.hexdigest()[:16])
    for name in os.listdir(root):
        if name.startswith(prefix) and os.path.join(root, name) != folder:
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)
    return folder


def run_ours(model: str, seed: int, args) -> dict:
    """Ours, in its own process (``ours-driver``). Resumable: a run stopped in mid-training (a session's end)
    goes on from its last snapshot (at most every 5 minutes, at the start of an epoch) when the same run is
    asked again, to the result it would have had (``recbole_metammf/benchmark/resume.py``); its log is then
    appended to, and the record says ``resumed``."""
    workdir = os.path.join(args.scratch, "ours-run")  # RecBole writes log/ and saved/ under its cwd
    os.makedirs(workdir, exist_ok=True)
    out = os.path.join(workdir, f"{shared.row_label(model, args)}__ours__seed{seed}.trial.json")
    overrides = ours_config(model, args.data_path, args.extra)
    log_path = os.path.join(args.scratch, "logs", f"{shared.row_label(model, args)}__ours__seed{seed}.log")
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    patch = getattr(args, "ours_patch", None)
    snapshots = ours_snapshot_folder(workdir, shared.row_label(model, args), seed, shared.MODELS[model]["ours"], overrides, patch)
    cmd = [sys.executable, shared.CLI, "ours-driver", "--model", shared.MODELS[model]["ours"],
           "--seed", str(seed), "--config", json.dumps(overrides), "--out", out, "--snapshots", snapshots]
    if patch:
        cmd += ["--patch", patch]
    resuming = os.path.isdir(snapshots) and bool(os.listdir(snapshots))
    returncode, wall, text = shared.run_logged(cmd, workdir, log_path, append=resuming)
    record = {"side": "ours", "model": model, "ours_model": shared.MODELS[model]["ours"], "seed": seed,
              "config": overrides, "wall_time_s": round(wall, 1), "log": log_path,
              "command": "OMP_NUM_THREADS=1 python -c 'from recbole_metammf.benchmark.trial import run_trial; "
                         f"run_trial(\"{shared.MODELS[model]['ours']}\", \"{shared.DATASET}\", {seed}, "
                         f"config_dict={json.dumps(overrides)})'"}
    if patch:  # the patch is applied by the driver: its command is the run's
        record.update(ours_patch=patch, ours_patch_does=OURS_PATCHES[patch],
                      command=f"OMP_NUM_THREADS=1 python benchmarks/reference_check.py ours-driver --model "
                              f"{shared.MODELS[model]['ours']} --seed {seed} --config '{json.dumps(overrides)}' "
                              f"--patch {patch} --out OUT.json")
    if returncode != 0 or not os.path.isfile(out):
        record.update(status="failed", error=text[-3000:])
        return record
    with open(out) as f:
        trial = json.load(f)
    if trial.get("status") != "ok":
        record.update(status="failed", error=trial.get("error"))
        return record
    shutil.rmtree(snapshots, ignore_errors=True)  # finished: nothing to resume
    if trial.get("resumed"):
        record["resumed"] = trial["resumed"]
    times = parse_recbole_epoch_times(text)
    record.update({
        "status": "ok", "epochs_run": trial["epochs_run"], "best_epoch": trial["best_epoch"],
        "best_valid": trial["best_valid_result"], "test": trial["test_result"],
        "epoch_train_times_s": times,
        "median_epoch_s": statistics.median(times) if times else trial["train_time_s"] / max(1, trial["epochs_run"]),
        "valid_curve": [[p["epoch"], p["score"]] for p in trial["valid_curve"]],
        "model_params": trial.get("model_params"), "training": trial.get("training"),
        "protocol": trial.get("protocol"), "versions": trial.get("versions"), "threads": trial.get("threads"),
        "code_digest": trial.get("code_digest"),
    })
    diagnostic = trial.get("diagnostic_best_test_over_epochs")
    if diagnostic:  # run with diagnose_best_test_epoch: the test of every epoch, as MMRec logs it (never a result)
        record["test_curve"] = [[p["epoch"], p["result"]["recall@20"]] for p in diagnostic["test_curve"]
                                if "recall@20" in p["result"]]
    return record


def ours_code_digest(ours_model: str) -> str:
    """The digest of the plugin code a trial of ``ours_model`` runs (``benchmark.fingerprint.code_digest``: its
    model file, the shared modules, torch's and RecBole's versions), from this checkout."""
    if shared.REPO not in sys.path:
        sys.path.insert(0, shared.REPO)
    from recbole_metammf.benchmark.fingerprint import code_digest

    return code_digest(ours_model)


def cmd_ours_driver(args) -> None:
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, shared.REPO)
    sys.argv = sys.argv[:1]  # RecBole's Config also reads the command line
    from recbole_metammf.benchmark.trial import run_trial

    from recbole_metammf.benchmark import resume
    from recbole_metammf.benchmark.runner import add_resume_info

    if args.patch:
        apply_ours_patch(args.patch)
    if args.snapshots:
        resume.activate(args.snapshots, args.snapshot_every_s)
    record = run_trial(args.model, shared.DATASET, args.seed, config_dict=json.loads(args.config))
    record = add_resume_info(record, resume.deactivate())
    record["code_digest"] = ours_code_digest(args.model)  # what a later row may reuse this run on
    shared.write_json(args.out, record)
    if record.get("status") != "ok":
        print(record.get("traceback") or record.get("error"), file=sys.stderr)
        sys.exit(1)
