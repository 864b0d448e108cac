"""MMRec's side of the reference check: its data layout, its configs, its log, the patches a run may apply to a
scratch copy of its code, and the driver its runs go through (``reference_check.py mmrec-driver``)."""

from __future__ import annotations

import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import time

import yaml

from . import shared

DEFAULT_MIRROR = "/work/.mirror/enoche+MMRec/repo"


# ---------------------------------------------------------------------------------------------
# MMRec's data layout
# ---------------------------------------------------------------------------------------------

def write_mmrec_layout(src_dir: str, name: str, out_dir: str, modality_files: dict | None = None) -> dict:
    """Write dataset ``name`` (RecBole atomic files ``NAME.{train,valid,test}.inter`` and ``NAME.item``
    in ``src_dir``) in MMRec's layout under ``out_dir/name/``; returns what was written.

    Users and items get ids 0..n-1 in token order (numeric when the tokens are integers, so a
    dataset already numbered 0..n-1 keeps its ids). Items are those of the interactions; each
    must have a row in ``.item`` for every modality written (feature row ``i`` = item id ``i``).
    Files are written to a temporary name and renamed, so a failure leaves no partial layout.
    """
    import numpy as np

    modality_files = dict(shared.MODALITY_FILES if modality_files is None else modality_files)
    splits = []
    for label, part in enumerate(("train", "valid", "test")):
        frame = shared.read_atomic(os.path.join(src_dir, f"{name}.{part}.inter"))
        for col in ("user_id", "item_id"):
            if col not in frame.columns:
                raise ValueError(f"{os.path.join(src_dir, f'{name}.{part}.inter')}: no {col} column")
        splits.append((label, frame))
    users = shared.sorted_tokens(t for _, f in splits for t in f["user_id"])
    items = shared.sorted_tokens(t for _, f in splits for t in f["item_id"])
    uid = {t: i for i, t in enumerate(users)}
    iid = {t: i for i, t in enumerate(items)}

    item_path = os.path.join(src_dir, f"{name}.item")
    item_frame = shared.read_atomic(item_path)
    features = {}
    for column, file_name in modality_files.items():
        if column not in item_frame.columns:
            raise ValueError(f"{item_path}: no modality column {column!r} (columns: {list(item_frame.columns)})")
        rows = dict(zip(item_frame["item_id"], item_frame[column]))
        missing = [t for t in items if not rows.get(t, "").strip()]
        if missing:
            raise ValueError(f"{item_path}: {len(missing)} interacted items have no {column!r} row "
                             f"(first: {missing[0]!r}); MMRec needs one feature row per item id")
        matrix = np.asarray([np.array(rows[t].split(), dtype=np.float32) for t in items], dtype=np.float32)
        features[file_name] = matrix

    folder = os.path.join(out_dir, name)
    os.makedirs(folder, exist_ok=True)
    inter_path = os.path.join(folder, f"{name}.inter")
    counts = {}
    tmp = inter_path + ".tmp"
    with open(tmp, "w") as f:
        f.write("userID\titemID\tx_label\n")
        for label, frame in splits:
            counts[label] = len(frame)
            for u, i in zip(frame["user_id"], frame["item_id"]):
                f.write(f"{uid[u]}\t{iid[i]}\t{label}\n")
    for file_name, matrix in features.items():
        path = os.path.join(folder, file_name)
        with open(path + ".tmp", "wb") as f:
            np.save(f, matrix)
    for file_name in features:
        os.replace(os.path.join(folder, file_name) + ".tmp", os.path.join(folder, file_name))
    os.replace(tmp, inter_path)
    yaml_text = mmrec_dataset_yaml(name, modality_files)
    with open(os.path.join(folder, f"{name}.yaml"), "w") as f:
        f.write(yaml_text)
    return {"folder": folder, "n_users": len(users), "n_items": len(items), "rows_per_label": counts,
            "features": {k: list(v.shape) for k, v in features.items()}, "yaml": yaml_text}


def mmrec_dataset_yaml(name: str, modality_files: dict | None = None) -> str:
    """MMRec's dataset YAML (``configs/dataset/NAME.yaml``) for the layout above."""
    files = list((shared.MODALITY_FILES if modality_files is None else modality_files).items())
    by_file = {f: c for c, f in files}
    lines = [f"# {name} in MMRec's layout, written by recbole-metammf's benchmarks/reference_check.py",
             "USER_ID_FIELD: userID", "ITEM_ID_FIELD: itemID", "inter_splitting_label: x_label",
             "filter_out_cod_start_users: True", f"inter_file_name: '{name}.inter'",
             f"vision_feature_file: 'image_feat.npy'   # our {by_file.get('image_feat.npy', '-')}",
             f"text_feature_file: 'text_feat.npy'     # our {by_file.get('text_feat.npy', '-')}",
             'field_separator: "\\t"', "user_graph_dict_file: 'user_graph_dict.npy'   # DRAGON's (prepare_dragon_user_graph)",
             ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# MMRec's log
# ---------------------------------------------------------------------------------------------

_METRIC = re.compile(r"([a-z0-9]+@\d+): ([0-9.]+)")


def _metrics(text: str) -> dict:
    return {k: float(v) for k, v in _METRIC.findall(text)}


def parse_mmrec_log(text: str) -> dict:
    """Every epoch of an MMRec training log (its ``Trainer.fit`` lines) and the test result at the
    best-validation epoch (the last epoch that logged "Best validation results updated")."""
    lines = text.splitlines()
    epochs: dict[int, dict] = {}
    current = None
    for n, line in enumerate(lines):
        m = re.search(r"epoch (\d+) training \[time: ([0-9.]+)s", line)
        if m:
            epochs.setdefault(int(m.group(1)), {})["train_time_s"] = float(m.group(2))
            continue
        m = re.search(r"refcheck epoch (\d+) train_time ([0-9.]+)s", line)  # the driver's own timing
        if m:
            epochs.setdefault(int(m.group(1)), {}).setdefault("train_time_s", float(m.group(2)))
            continue
        m = re.search(r"epoch (\d+) evaluating \[time: ([0-9.]+)s, valid_score: ([0-9.]+)\]", line)
        if m:
            current = int(m.group(1))
            epochs.setdefault(current, {}).update(valid_score=float(m.group(3)))
            continue
        if current is not None and line.rstrip().endswith("valid result:") and n + 1 < len(lines):
            epochs[current]["valid"] = _metrics(lines[n + 1])
        elif current is not None and line.rstrip().endswith("test result:") and n + 1 < len(lines):
            epochs[current]["test"] = _metrics(lines[n + 1])
        elif current is not None and "Best validation results updated" in line:
            epochs[current]["best"] = True
    evaluated = [e for e in sorted(epochs) if "valid_score" in epochs[e]]
    best = [e for e in evaluated if epochs[e].get("best")]
    times = [epochs[e]["train_time_s"] for e in sorted(epochs) if "train_time_s" in epochs[e]]
    m = re.search(r"Finished training, best eval result in epoch (\d+)", text)
    out = {
        "epochs_run": len(evaluated),
        "best_epoch": best[-1] if best else None,
        "stopped_early": bool(m),
        "epoch_train_times_s": times,
        "median_epoch_s": statistics.median(times) if times else None,
        "valid_curve": [[e, epochs[e]["valid_score"]] for e in evaluated],
        # MMRec evaluates test at every epoch too: a diagnostic (what the stopped run's later epochs tested), never
        # a result; Recall@20, as the table
        "test_curve": [[e, epochs[e]["test"]["recall@20"]] for e in evaluated if "recall@20" in epochs[e].get("test", {})],
    }
    if best:
        out["best_valid"] = epochs[best[-1]].get("valid", {})
        out["test"] = epochs[best[-1]].get("test", {})
    if m and best and int(m.group(1)) != best[-1]:
        raise ValueError(f"MMRec log: 'best eval result in epoch {m.group(1)}' but the last update was epoch {best[-1]}")
    return out


# ---------------------------------------------------------------------------------------------
# The config MMRec is given
# ---------------------------------------------------------------------------------------------

def mmrec_first(value):
    """MMRec's YAML value, its first grid value where it gives a list."""
    return value[0] if isinstance(value, list) and value else value


def mmrec_grid_firsts(model_yaml: dict) -> dict:
    """The first value of every key MMRec's model YAML searches (``hyper_parameters``) with a list of values.

    With the grid replaced by ``hyper_parameters: [seed]`` MMRec no longer expands those keys, and a key our
    map does not set would reach the model as the whole list (DRAGON's ``aggr_mode: ['add']`` then makes its
    graph layers skip their degree normalisation, whose check is ``aggr == 'add'``): each gets the value
    MMRec's own first grid point gives it."""
    out = {}
    for key in model_yaml.get("hyper_parameters") or []:
        value = model_yaml.get(key)
        if isinstance(value, list) and value and key != "seed":
            out[key] = value[0]
    return out


def read_mmrec_model_yaml(checkout: str, model: str) -> dict:
    """MMRec's ``src/configs/model/<MODEL>.yaml`` of the scratch checkout ({} if it has none)."""
    path = os.path.join(checkout, "src", "configs", "model", f"{model}.yaml")
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return yaml.safe_load(f) or {}


def mmrec_config(model: str, ours_cfg: dict, seed: int, data_root: str, model_yaml: dict | None = None) -> dict:
    """The ``config_dict`` given to MMRec's ``quick_start``: our resolved settings mapped to MMRec's
    keys, one seed, no grid (``hyper_parameters: [seed]``; the keys MMRec's ``model_yaml`` searches and we
    do not map at their first grid value), Recall@20 on validation."""
    spec = shared.MODELS[model]
    out = mmrec_grid_firsts(model_yaml or {})
    for ref_key, ours_key in {**shared.TRAINING_MAP, **spec["map"]}.items():
        value = ours_key(ours_cfg) if callable(ours_key) else ours_cfg.get(ours_key)
        if value is None:
            raise ValueError(f"{model}: our config has no {ours_key!r} for MMRec's {ref_key!r}")
        out[ref_key] = value
    out.update({
        "seed": [int(seed)], "hyper_parameters": ["seed"], "data_path": data_root.rstrip("/") + "/",
        "use_gpu": False, "gpu_id": 0, "metrics": ["Recall", "NDCG"], "topk": [10, 20],
        "valid_metric": "Recall@20", "save_recommended_topk": False, "eval_step": 1,
        "learner": ours_cfg.get("learner", "adam"), "weight_decay": float(ours_cfg.get("weight_decay") or 0.0),
    })
    return out


# ---------------------------------------------------------------------------------------------
# Running MMRec from a scratch copy
# ---------------------------------------------------------------------------------------------

def mmrec_checkout(mirror: str, dest: str) -> str:
    """Extract the mirror's HEAD into ``dest`` once (``git archive``); the commit it holds."""
    marker = os.path.join(dest, "REFCHECK_COMMIT")
    if os.path.isfile(marker):
        with open(marker) as f:
            return f.read().strip()
    commit = subprocess.run(["git", "--git-dir", mirror, "rev-parse", "HEAD"], check=True,
                            capture_output=True, text=True).stdout.strip()
    os.makedirs(dest, exist_ok=True)
    archive = subprocess.run(["git", "--git-dir", mirror, "archive", commit], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", dest], input=archive, check=True)
    with open(marker, "w") as f:
        f.write(commit + "\n")
    return commit


# MMRec's DRAGON registers its output cache ``result_embed`` as a parameter and moves it with ``.to(device)``: on
# a GPU that returns a plain tensor (so ``forward`` may assign one), on the CPU the parameter itself, and the first
# batch fails (``TypeError: cannot assign 'torch.FloatTensor' as parameter``). The scratch copy is patched to what
# the GPU gives: the same values as a plain tensor (``.data``), never trained (as on a GPU).
DRAGON_CPU_PATCH = (
    "nn.init.xavier_normal_(torch.tensor(np.random.randn(num_user + num_item, dim_x)))).to(self.device)",
    "nn.init.xavier_normal_(torch.tensor(np.random.randn(num_user + num_item, dim_x)))).data.to(self.device)",
)


def patch_once(path: str, pairs, what: str) -> None:
    """Replace each ``(anchor, replacement)`` of ``pairs`` in the file ``path``, in place and once: nothing to do
    when every replacement is there already; else every anchor must occur exactly once, or the file is left
    alone and the error names the file, ``what`` and the anchor."""
    with open(path) as f:
        text = f.read()
    if all(new in text for _, new in pairs):
        return
    for old, _ in pairs:
        if text.count(old) != 1:
            raise RuntimeError(f"{path}: {what} expects its anchor once, found {text.count(old)}: {old[:60]}")
    for old, new in pairs:
        text = text.replace(old, new)
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def patch_dragon_for_cpu(checkout: str) -> None:
    """Apply :data:`DRAGON_CPU_PATCH` to the scratch checkout's ``src/models/dragon.py`` (:func:`patch_once`)."""
    patch_once(os.path.join(checkout, "src", "models", "dragon.py"), [DRAGON_CPU_PATCH], "DRAGON's CPU patch")


# Optional changes to a copy of the reference, to test an explanation by a run (``--reference-patch NAME``, always
# with ``--tag``): each is (file under src/, [(anchor, replacement), ...], what it changes). The patched copy is its
# own checkout (``mmrec-NAME``), so the plain reference is never touched.
REFERENCE_PATCHES = {
    "mmgcn-trained": (
        os.path.join("models", "mmgcn.py"),
        [("self.id_embedding = nn.init.xavier_normal_(torch.rand((num_user+num_item, dim_x), requires_grad=True))"
          ".to(self.device)",
          "self.id_embedding = nn.Parameter(nn.init.xavier_normal_(torch.rand((num_user+num_item, dim_x)))"
          ".to(self.device))"),
         ("self.preference = nn.init.xavier_normal_(torch.rand((num_user, self.dim_latent), requires_grad=True))"
          ".to(self.device)",
          "self.preference = nn.Parameter(nn.init.xavier_normal_(torch.rand((num_user, self.dim_latent)))"
          ".to(self.device))"),
         ("self.preference = nn.init.xavier_normal_(torch.rand((num_user, self.dim_feat), requires_grad=True))"
          ".to(self.device)",
          "self.preference = nn.Parameter(nn.init.xavier_normal_(torch.rand((num_user, self.dim_feat)))"
          ".to(self.device))")],
        "MMGCN's ID table and user preferences registered as parameters (trained), as the paper has them",
    ),
    # MMRec's CGCN routes with edges (user, item + n_users) and PyG's source-to-target flow, so only items receive
    # messages: x_hat_1[:num_user] is zero and the user preferences never move. This sends the routing step's
    # messages from items to users (the paper's routing, and ours); the call before it still runs, unused.
    "grcn-routing": (
        os.path.join("models", "grcn.py"),
        [("preference = preference + x_hat_1[:self.num_user]",
          "preference = preference + self.conv_embed_1(x, edge_index[[1, 0]])[:self.num_user]")],
        "GRCN's routing step messages users from their items (in MMRec only items receive them)",
    ),
    # MMRec's training loader samples negatives from the items seen in training only; RecBole (ours) from every
    # item. On this split 465 of the 6,710 items have no training row (7.3 % of the test rows): never negatives there.
    "all-item-negatives": (
        os.path.join("utils", "dataloader.py"),
        [("self.all_items = self.dataset.df[self.dataset.iid_field].unique().tolist()",
          "self.all_items = list(range(self.dataset.item_num))")],
        "negatives drawn from every item, as RecBole's sampler (MMRec: only items with a training row)",
    ),
    # A speed patch, the same arithmetic: MMRec's compute_normalized_laplacian (LATTICE's learned item graph, built on
    # the first batch of every epoch with gradient and again for every evaluation batch) scales the dense
    # [n_items, n_items] graph by two products with a dense diagonal matrix, 4 n^3 flops per build (about 1.2 TFLOP on
    # TikTok's 6,710 items, with its backward about three times that: most of the unpatched run's 28.8 s epoch). Scaling rows and
    # columns by broadcasting gives every entry as the same single product d_i a_ij d_j (the diagonal products add
    # exact zeros); only the gradient of d, a sum over a row, may differ in its last bits by summation order
    # (tests/test_reference_check.py checks both on MMRec's own function).
    "lattice-laplacian": (
        os.path.join("utils", "utils.py"),
        [("    d_mat_inv_sqrt = torch.diagflat(d_inv_sqrt)\n"
          "    L_norm = torch.mm(torch.mm(d_mat_inv_sqrt, adj), d_mat_inv_sqrt)\n",
          "    L_norm = d_inv_sqrt.unsqueeze(1) * adj * d_inv_sqrt.unsqueeze(0)  # refcheck: D A D by broadcasting\n")],
        "the dense Laplacian's D^-1/2 A D^-1/2 by broadcasting instead of two products with a dense diagonal "
        "matrix (the same entries; a speed patch for LATTICE's item graph)",
    ),
    # MMRec's early stopping resets its patience only on a strictly better validation score; RecBole's (ours) also on a
    # tie. Scores are rounded to 4 decimals, so ties are common on a stalled curve (LGMRec's best .0515 at epoch 76
    # is tied at 104, which MMRec's rule does not count).
    "ties-reset-patience": (
        os.path.join("utils", "utils.py"),
        [("    if bigger:\n        if value > best:\n", "    if bigger:\n        if value >= best:  # refcheck: ties count, as RecBole\n")],
        "early stopping resets its patience on a tie with the best validation score too, as RecBole's "
        "(MMRec: only on a strictly better one)",
    ),
}


def apply_reference_patch(checkout: str, name: str) -> None:
    """Apply :data:`REFERENCE_PATCHES` ``name`` to the checkout (:func:`patch_once`)."""
    rel, pairs, _ = REFERENCE_PATCHES[name]
    patch_once(os.path.join(checkout, "src", rel), pairs, f"reference patch {name}")


def prepare_dragon_user_graph(checkout: str, data_root: str, scratch: str) -> str:
    """MMRec's DRAGON reads a user-user graph (``user_graph_dict.npy``) that MMRec's own
    ``preprocessing/dualgnn-gen-u-u-matrix.py`` makes from the training rows (``x_label`` 0): run that
    script once in the scratch checkout on the layout written here; the file's path."""
    out = os.path.join(data_root, shared.DATASET, "user_graph_dict.npy")
    if os.path.isfile(out):
        return out
    src = os.path.join(checkout, "src")
    overall = os.path.join(src, "configs", "overall.yaml")
    with open(overall) as f:
        text = f.read()
    # the script reads data_path from overall.yaml (relative '../data/'): point it at the layout
    patched = re.sub(r"^data_path:.*$", f"data_path: '{data_root.rstrip('/')}/'", text, count=1, flags=re.M)
    if patched == text:
        raise RuntimeError(f"{overall}: no data_path line to point at {data_root}")
    with open(overall, "w") as f:
        f.write(patched)
    try:
        log_path = os.path.join(scratch, "logs", "DRAGON__user_graph.log")
        os.makedirs(os.path.dirname(log_path), exist_ok=True)
        returncode, _, text_log = shared.run_logged([sys.executable, "dualgnn-gen-u-u-matrix.py", "-d", shared.DATASET],
                                                    os.path.join(checkout, "preprocessing"), log_path)
    finally:
        with open(overall, "w") as f:
            f.write(text)
    if returncode != 0 or not os.path.isfile(out):
        raise RuntimeError(f"MMRec's dualgnn-gen-u-u-matrix.py failed (log {log_path}): {text_log[-1500:]}")
    return out


def run_reference(model: str, seed: int, ours_cfg: dict, args) -> dict:
    patch = getattr(args, "reference_patch", None)
    checkout = os.path.join(args.scratch, "mmrec" if not patch else f"mmrec-{patch}")
    commit = mmrec_checkout(args.mirror, checkout)
    if patch:
        apply_reference_patch(checkout, patch)
    src = os.path.join(checkout, "src")
    data_root = os.path.join(args.scratch, "data")
    with open(os.path.join(data_root, shared.DATASET, f"{shared.DATASET}.yaml")) as f:
        yaml_text = f.read()
    with open(os.path.join(src, "configs", "dataset", f"{shared.DATASET}.yaml"), "w") as f:
        f.write(yaml_text)
    if shared.MODELS[model].get("prepare") == "dragon_user_graph":
        prepare_dragon_user_graph(checkout, data_root, args.scratch)
        patch_dragon_for_cpu(checkout)
    config = mmrec_config(model, ours_cfg, seed, data_root, read_mmrec_model_yaml(checkout, shared.MODELS[model]["reference"]))
    clear_mmrec_graph_caches(os.path.join(data_root, shared.DATASET))
    log_path = os.path.join(args.scratch, "logs", f"{shared.row_label(model, args)}__reference__seed{seed}.log")
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    cmd = [sys.executable, shared.CLI, "mmrec-driver", "--src", src,
           "--model", shared.MODELS[model]["reference"], "--dataset", shared.DATASET, "--config", json.dumps(config)]
    returncode, wall, text = shared.run_logged(cmd, src, log_path)
    record = {"side": "reference", "model": model, "reference_model": shared.MODELS[model]["reference"], "seed": seed,
              "reference": "github enoche/MMRec", "reference_commit": commit, "config": config,
              **({"reference_patch": patch, "reference_patch_does": REFERENCE_PATCHES[patch][2]} if patch else {}),
              "command": f"cd {shlex.quote(src)} && OMP_NUM_THREADS=1 python {shlex.quote(shared.CLI)} "
                         f"mmrec-driver --src . --model {shared.MODELS[model]['reference']} --dataset {shared.DATASET} "
                         f"--config {shlex.quote(json.dumps(config))}",
              "wall_time_s": round(wall, 1), "log": log_path}
    return shared.finished_record(record, returncode, text, parse_mmrec_log, "no best-validation epoch in MMRec's log")


def clear_mmrec_graph_caches(data_dir: str) -> list[str]:
    """Remove the item graphs MMRec's models cache beside the data (``*.pt``: DRAGON's ``mm_adj_{k}.pt``,
    FREEDOM's, LATTICE's, MGCN's), so each reference run builds its own from its own settings (DRAGON's file
    name omits its modality weight, and a cache of another setting would be read silently); the names removed."""
    removed = []
    for name in sorted(os.listdir(data_dir)):
        if name.endswith(".pt"):
            os.remove(os.path.join(data_dir, name))
            removed.append(name)
    return removed


def cmd_test_curves(results: str | None = None) -> list[str]:
    """Add ``test_curve`` (MMRec's per-epoch test Recall@20, a diagnostic) to MMRec records written before the
    parser kept it, from the log each record names; a log whose validation curve is not the record's is refused
    before any record is written. Returns the files changed (``results``: the records' folder, by default
    ``benchmarks/reference_check/``)."""
    results = results or shared.RESULTS
    updates = []
    for name in sorted(os.listdir(results)):
        path = os.path.join(results, name)
        if not name.endswith(".json"):
            continue
        with open(path) as f:
            record = json.load(f)
        if record.get("side") != "reference" or record.get("model", "").startswith("DiffMM") or "test_curve" in record:
            continue
        log = record.get("log")
        if not log or not os.path.isfile(log):
            print(f"{name}: its log {log} is not here; left as it is")
            continue
        with open(log, errors="replace") as f:
            parsed = parse_mmrec_log(f.read())
        if parsed["valid_curve"] != record.get("valid_curve"):
            raise ValueError(f"{name}: the validation curve in {log} is not the record's; not that run's log")
        updates.append((name, path, {**record, "test_curve": parsed["test_curve"]}))
    for _, path, record in updates:
        shared.write_json(path, record)
    return [name for name, _, _ in updates]


# ---------------------------------------------------------------------------------------------
# The driver (run in its own process, one thread)
# ---------------------------------------------------------------------------------------------

def _scatter_add(src, index, dim=-1, out=None, dim_size=None):
    """``torch_scatter.scatter_add`` in plain torch: ``out[..., index[j], ...] += src[..., j, ...]`` along
    ``dim`` (``index`` is broadcast to ``src`` as torch_scatter does; a new ``out`` has ``dim_size`` rows)."""
    import torch

    dim = dim % src.dim()
    if index.dim() < src.dim():  # torch_scatter's broadcast: index runs along ``dim``
        view = [1] * src.dim()
        view[dim] = -1
        index = index.view(view)
    index = index.expand_as(src)
    if out is None:
        shape = list(src.shape)
        shape[dim] = int(dim_size) if dim_size is not None else (int(index.max()) + 1 if index.numel() else 0)
        out = src.new_zeros(shape)
    return out.scatter_add_(dim, index, src)


def _torch_scatter_shim():
    """A stand-in ``torch_scatter`` module with :func:`_scatter_add` (the extension has no wheel for this torch)."""
    import types

    module = types.ModuleType("torch_scatter")
    module.scatter_add = _scatter_add
    return module


def cmd_mmrec_driver(args) -> None:
    """Run MMRec's quick_start in MMRec's src/ folder with one thread and our settings."""
    import types

    import torch

    import numpy as np

    torch.set_num_threads(1)
    if not torch.cuda.is_available():  # MMRec's LATTICE moves its raw-content graphs with .cuda() whatever the device
        torch.Tensor.cuda = lambda self, *args, **kwargs: self
    if "float" not in np.__dict__:  # MMRec's metrics.py uses the alias numpy 1.24 removed (it meant float)
        np.float = float
    os.chdir(args.src)
    sys.path.insert(0, args.src)
    try:
        import torchvision  # noqa: F401
    except ImportError:  # only raw-image helpers import it; no model run here uses them
        stub = types.ModuleType("utils.data_utils")

        def _unavailable(*_a, **_k):
            raise RuntimeError("torchvision is not installed: MMRec's raw-image helpers are unavailable")
        for name in ("ImageResize", "ImagePad", "image_to_tensor", "load_decompress_img_from_lmdb_value"):
            setattr(stub, name, _unavailable)
        sys.modules["utils.data_utils"] = stub
    try:
        import torch_scatter  # noqa: F401
    except ImportError:  # MMRec's utils.get_sparse_laplacian (MGCN's kNN graphs) imports it for one scatter_add
        sys.modules["torch_scatter"] = _torch_scatter_shim()
    from common import trainer as mmrec_trainer  # noqa: E402  (MMRec's module)
    from utils.quick_start import quick_start  # noqa: E402

    original = mmrec_trainer.Trainer._train_epoch

    def timed(self, train_data, epoch_idx, loss_func=None):
        start = time.perf_counter()
        out = original(self, train_data, epoch_idx, loss_func)
        self.logger.info("refcheck epoch %d train_time %.4fs" % (epoch_idx, time.perf_counter() - start))
        return out

    mmrec_trainer.Trainer._train_epoch = timed  # a second timing line, for models whose own line omits the time
    quick_start(model=args.model, dataset=args.dataset, config_dict=json.loads(args.config), save_model=False)
