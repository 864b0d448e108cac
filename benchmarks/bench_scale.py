"""MetaMMF's training epoch as a user meets it, as ratios against RecBole's own models (issue 12).

The primary figure is a FULL training epoch through RecBole's trainer: every case runs in
its own process (so its peak RSS is its own) through RecBole's pipeline (``Config`` ->
``create_dataset`` -> ``data_preparation`` -> ``get_model`` -> ``get_trainer``) and times
``trainer._train_epoch(train_data, ...)`` over whole epochs: exactly what ``run_recbole.py``'s
``epoch N training [time: ...]`` line times (RecBole's dataloader and negative sampling,
``calculate_loss``, ``backward``, ``optimizer.step``). Evaluation is off during those
epochs. A case's figure is the median of ``--epochs`` timed epochs after ``--warmup``
untimed ones (per group, see ``GROUPS``).

The machine may be shared, so the compared models are INTERLEAVED: the workers of one
group (e.g. LightGCN and MetaMMF_GCN on one shape) are started side by side, each
loads its data and waits; the driver then asks them for one epoch in turn (A, B, A, B,
...), so background load hits all alike. The load average is recorded with every epoch.
Torch runs with ``--threads`` threads (2).

After its timed epochs a worker also measures (for the reconciliation with issue 6's
extrapolated figure): the old method, ``--steps`` training steps after one warm-up,
extrapolated to an epoch; and one pass over the training dataloader alone (batching and
negative sampling, no model).

Results are resumable: one JSON per case under ``benchmarks/scale_runs/`` (and one per
profile), written as soon as its group finishes; ``--only GROUP[,GROUP]`` reruns groups,
``--report`` only rewrites ``benchmarks/RESULTS.md`` from the JSON files.

Data: ``mid`` (8,000 users, 20,000 items, 150,000 interactions split 8:1:1 per user,
dense 128 / 128 / 64-d modalities; the synthetic generator's planted clusters) is written
by this script; ``tiktok`` and ``kwai`` are the full-size synthetic shapes of
``python -m dataset_converters synthetic --like K --scale 1`` converted with
``python -m dataset_converters K`` (``--generate`` makes whatever is missing).

    python benchmarks/bench_scale.py --generate                 # every group not yet measured
    python benchmarks/bench_scale.py --only mid-gcn --force     # rerun one group
    python benchmarks/bench_scale.py --profile mid --tag before # torch.profiler of one MetaMMF_GCN step
    python benchmarks/bench_scale.py --report                   # rewrite RESULTS.md from scale_runs/
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RUNS = HERE / "scale_runs"
sys.path.insert(0, str(REPO))

# common settings: embedding 64 (MetaMMF: 32 fused + 32 ID), 2 graph layers
COMMON = {"embedding_size": 64, "id_embedding_size": 32, "n_layers": 2}
BATCH = {"mid": 4096, "tiktok": 2048, "kwai": 2048}
MID = {"users": 8000, "items": 20000, "inter": 150000, "dims": {"visual": 128, "acoustic": 128, "textual": 64}}

# case key -> (model, shape, extra config)
CASES = {
    "mid/LightGCN": ("LightGCN", "mid", {}),
    "mid/MetaMMF_GCN": ("MetaMMF_GCN", "mid", {}),
    "mid/MetaMMF_GCN-ref": ("MetaMMF_GCN", "mid", {"meta_hidden_size": None}),  # the released code's d_in width
    "mid/MetaMMF_GCN-nofast": ("MetaMMF_GCN", "mid", {"_fast_paths": False}),
    "mid/BPR": ("BPR", "mid", {}),
    "mid/MetaMMF_MF": ("MetaMMF_MF", "mid", {}),
    "mid/MetaMMF_MF-ref": ("MetaMMF_MF", "mid", {"meta_hidden_size": None}),
    "mid/GRCN": ("GRCN", "mid", {}),
    # issue 25: the content scale alone (layers.fusion.ContentScale), everything else as shipped
    "mid/MetaMMF_GCN-rms": ("MetaMMF_GCN", "mid", {"content_scale": "rms"}),
    "mid/MetaMMF_GCN-unscaled": ("MetaMMF_GCN", "mid", {"content_scale": "none"}),
    "mid/MetaMMF_MF-rms": ("MetaMMF_MF", "mid", {"content_scale": "rms"}),
    "mid/MetaMMF_MF-unscaled": ("MetaMMF_MF", "mid", {"content_scale": "none"}),
    "mid/MetaMMF_MF-gate": ("MetaMMF_MF", "mid", {"content_scale": "gate"}),
    "mid2048/LightGCN": ("LightGCN", "mid", {"train_batch_size": 2048}),
    "mid2048/MetaMMF_GCN": ("MetaMMF_GCN", "mid", {"train_batch_size": 2048}),
    "tiktok/LightGCN": ("LightGCN", "tiktok", {}),
    "tiktok/MetaMMF_GCN": ("MetaMMF_GCN", "tiktok", {}),
    "tiktok/BPR": ("BPR", "tiktok", {}),
    "tiktok/MetaMMF_MF": ("MetaMMF_MF", "tiktok", {}),
    "kwai/LightGCN": ("LightGCN", "kwai", {}),
    "kwai/MetaMMF_GCN": ("MetaMMF_GCN", "kwai", {}),
    "kwai/MetaMMF_GCN-ref": ("MetaMMF_GCN", "kwai", {"meta_hidden_size": None}),
    # issue 25: the real TikTok subset (shape "diffmm": dataset/tiktok-diffmm as converted, every key the model's
    # YAML, no COMMON overrides): the shipped defaults, the defaults before issue 25, the reference settings
    "diffmm/MetaMMF_GCN": ("MetaMMF_GCN", "diffmm", {}),
    "diffmm/MetaMMF_GCN-before": ("MetaMMF_GCN", "diffmm", {"content_scale": "none"}),
    "diffmm/MetaMMF_GCN-reference": ("MetaMMF_GCN", "diffmm",
                                     {"_config_files": ["properties/reference/MetaMMF-ref-movielens.yaml"]}),
}
# the allocator A/B: the same cases with glibc's own malloc settings (METAMMF_MALLOC=default, allocator.py)
GLIBC = ["mid/LightGCN", "mid/GRCN", "mid/MetaMMF_GCN", "tiktok/LightGCN", "tiktok/MetaMMF_GCN"]
CASES.update({f"{k}-glibc": (*CASES[k][:2], {**CASES[k][2], "_malloc": "default"}) for k in GLIBC})
# group -> (cases interleaved, warm-up epochs, timed epochs)
GROUPS = {
    "mid-gcn": (["mid/LightGCN", "mid/MetaMMF_GCN", "mid/MetaMMF_GCN-ref", "mid/MetaMMF_GCN-nofast"], 1, 3),
    "mid-mf": (["mid/BPR", "mid/MetaMMF_MF", "mid/MetaMMF_MF-ref"], 1, 3),
    "mid-grcn": (["mid/LightGCN", "mid/GRCN"], 1, 3),
    "mid-scale": (["mid/LightGCN", "mid/MetaMMF_GCN-rms", "mid/MetaMMF_GCN-unscaled",
                   "mid/BPR", "mid/MetaMMF_MF-rms", "mid/MetaMMF_MF-unscaled", "mid/MetaMMF_MF-gate"], 1, 3),
    "mid2048": (["mid2048/LightGCN", "mid2048/MetaMMF_GCN"], 1, 3),
    "tiktok-gcn": (["tiktok/LightGCN", "tiktok/MetaMMF_GCN"], 0, 3),
    "tiktok-mf": (["tiktok/BPR", "tiktok/MetaMMF_MF"], 1, 3),
    "kwai": (["kwai/LightGCN", "kwai/MetaMMF_GCN"], 0, 1),
    "kwai-ref": (["kwai/LightGCN", "kwai/MetaMMF_GCN-ref"], 0, 1),  # reference widths: a 2,048 x 2,048 extractor
    "mid-malloc": ([k for key in GLIBC[:3] for k in (key, f"{key}-glibc")], 1, 3),
    "tiktok-malloc": ([k for key in GLIBC[3:] for k in (key, f"{key}-glibc")], 0, 3),
    "diffmm-reference": (["diffmm/MetaMMF_GCN", "diffmm/MetaMMF_GCN-before", "diffmm/MetaMMF_GCN-reference"], 1, 3),
}
# shapes read from the user's converted datasets (REPO/dataset), not generated: shape -> dataset name
REAL = {"diffmm": "tiktok-diffmm"}


# ----------------------------------------------------------------------------- helpers
def case_file(group: str, key: str) -> str:
    return f"{group}__{key.replace('/', '_')}.json"


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


def rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def hwm_gb() -> float:
    """Peak RSS since the last :func:`reset_hwm` (VmHWM), GB."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def reset_hwm() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    except OSError:
        pass


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KB


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Measured fp32 matmul throughput of this process (median of ``repeats``)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


def step_flops(model) -> dict:
    """Dense matmul FLOPs of one MetaMMF training step (fusion of all items, SAGE layers).

    Backward of a matmul costs two matmuls (weight and input gradients) except where the
    input needs no gradient (the constant dense features): one. Sparse products are
    counted apart (``spmm_gflop``: 2 FLOPs per stored value and column, forward + backward).
    """
    from recbole_metammf.layers.fusion import MetaFusionLayer

    n = model.n_items
    fusion = model.fusion
    first_lin = fusion.extractor.net[0]
    d_in, hid, d_s = first_lin.in_features, first_lin.out_features, fusion.extractor.net[2].out_features
    const = not any(p.requires_grad for p in model.modalities.parameters())
    mats = [(d_in, hid, not const), (hid, d_s, True)]
    for i, layer in enumerate(fusion.layers):
        assert isinstance(layer, MetaFusionLayer)
        g = i > 0 or not const
        if layer.form == "cp":
            mats += [(layer.in_dim, layer.out_dim, g), (layer.in_dim, layer.rank, g), (d_s, layer.rank, True),
                     (layer.rank, layer.out_dim, True)]
        elif layer.form == "collapsed":
            mats += [(layer.in_dim, layer.out_dim, g), (layer.in_dim, layer.rank, g), (layer.rank, layer.out_dim, True)]
        else:
            mats += [(layer.in_dim, layer.out_dim, g), (layer.in_dim, d_s * layer.out_dim, g)]
    fusion_train = sum(2 * n * a * b * (3 if g else 2) for a, b, g in mats)
    out = {"fusion_train_gflop": fusion_train / 1e9, "extractor_train_gflop": sum(
        2 * n * a * b * (3 if g else 2) for a, b, g in mats[:2]) / 1e9}
    sage = 0
    nodes = model.n_users + model.n_items
    for conv in getattr(model, "convs", []):
        a, b = conv.lin_neigh.in_features, conv.lin_neigh.out_features
        sage += 2 * (2 * nodes * a * b * 3)
    out["sage_train_gflop"] = sage / 1e9
    nnz = model.adj.adj.values().numel() if hasattr(model, "adj") else 0
    widths = [c.lin_neigh.in_features for c in getattr(model, "convs", [])]
    out["spmm_gflop"] = sum(2 * nnz * w * 2 for w in widths) / 1e9
    out["dense_train_gflop"] = out["fusion_train_gflop"] + out["sage_train_gflop"]
    return out


# ----------------------------------------------------------------------------- data
def write_mid(data: str, seed: int = 0) -> None:
    """The issue's mid-size set as RecBole atomic files (DATA/scale-mid/), split 8:1:1 per user."""
    import numpy as np

    from dataset_converters import synthetic
    from dataset_converters.recbole_files import ConvertedDataset, Interactions, Modality, write_dataset
    from dataset_converters.splits import random_parts

    if os.path.isfile(os.path.join(data, "scale-mid", "scale-mid.yaml")):
        return
    rng = np.random.default_rng(seed)
    cluster = rng.integers(0, synthetic.N_CLUSTERS, MID["items"])
    users, items = synthetic.interactions(rng, MID["users"], MID["items"], MID["inter"], cluster)
    mods = [Modality(name, "float_seq", synthetic.dense_features(rng, cluster, dim)) for name, dim in MID["dims"].items()]
    part = random_parts(users, seed)
    inter = Interactions(users, items)
    splits = {name: inter.take(part == k) for k, name in enumerate(("train", "valid", "test"))}
    ds = ConvertedDataset(name="scale-mid", description="issue 12's mid-size synthetic set", inter=inter,
                          item_ids=np.arange(MID["items"]), modalities=mods, splits=splits,
                          split_note="per-user random 8:1:1")
    write_dataset(ds, data)


def generate(data: str, work: str) -> None:
    write_mid(data)
    for shape in ("tiktok", "kwai"):
        if os.path.isfile(os.path.join(data, f"scale-{shape}", f"scale-{shape}.yaml")):
            continue
        raw = os.path.join(work, "raw", shape)
        py = [sys.executable, "-m", "dataset_converters"]
        subprocess.run([*py, "synthetic", "--like", shape, "--scale", "1.0", "--out", raw], check=True, cwd=REPO)
        subprocess.run([*py, shape, "--src", raw, "--out", data, "--name", f"scale-{shape}"], check=True, cwd=REPO)


# ----------------------------------------------------------------------------- worker
def group_blocks_plain(x):
    from recbole_metammf.layers.fusion import group_blocks

    return group_blocks(x)


def say(obj) -> None:
    print("@@ " + json.dumps(obj), flush=True)


def build(key: str, data: str, work: str, threads: int):
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    import recbole_metammf  # noqa: F401  (registers the plugin models)

    try:
        from recbole_metammf.allocator import tune_allocator
    except ImportError:  # ab_step.py with an older checkout's package: glibc's own settings

        def tune_allocator():
            return "glibc defaults (a package without allocator.py)"

    model_name, shape, extra = CASES[key]
    extra = dict(extra)
    if extra.pop("_malloc", None) == "default":  # a "-glibc" case of the allocator A/B
        os.environ["METAMMF_MALLOC"] = "default"
    allocator = tune_allocator()  # as run_recbole.py does, for every model (METAMMF_MALLOC=default: glibc's own)
    torch.set_num_threads(threads)
    if not extra.pop("_fast_paths", True):  # issue 12's switchable fast paths off (int32 CSR indices, csr_mm
        # and GRCN's l2_normalize stay: they have no switch)
        from recbole_metammf.layers.fusion import MetaFusionNetwork
        from recbole_metammf.model.grcn import GRCN
        from recbole_metammf.model.metammf_gcn import MetaMMF_GCN
        from recbole_metammf.model.metammf_mf import MetaMMF_MF

        MetaFusionNetwork.fuse_input_products = MetaMMF_GCN.batched_gather = MetaMMF_GCN.fast_dropout = False
        MetaMMF_MF.gather_from_table = MetaMMF_MF.dedup_items = GRCN.stack_modalities = GRCN.gather_blocks = False
        MetaFusionNetwork.grouped = lambda self, x: group_blocks_plain(x)
    t_start = time.perf_counter()
    config_files = [str(REPO / f) for f in extra.pop("_config_files", [])]
    shape_keys = {} if shape in REAL else {**COMMON, "train_batch_size": BATCH[shape]}  # real data: the YAMLs
    cfg = {
        **shape_keys,
        "data_path": str(REPO / "dataset") if shape in REAL else data,
        "checkpoint_dir": os.path.join(work, "saved"),
        "save_dataset": False,
        "show_progress": False,
        "state": "ERROR",
        "seed": 2020,
        "reproducibility": False,
        **extra,
    }
    dataset_name = REAL.get(shape, f"scale-{shape}")
    if shape in REAL and not os.path.isfile(os.path.join(cfg["data_path"], dataset_name, f"{dataset_name}.inter")):
        sys.exit(f"bench_scale: {cfg['data_path']}/{dataset_name} is missing: convert it first "
                 f"(python -m dataset_converters diffmm --src ../shared/data/tiktok-diffmm --out dataset "
                 f"--name tiktok-diffmm)")
    config = Config(model=model_name, dataset=dataset_name, config_file_list=config_files or None, config_dict=cfg)
    init_seed(config["seed"], config["reproducibility"])
    torch.set_num_threads(threads)  # init_seed may not touch it; be sure
    dataset = create_dataset(config)
    train_data, _valid, _test = data_preparation(config, dataset)
    info = {"rss_after_data_gb": rss_gb(), "peak_loading_gb": peak_gb(), "load_s": time.perf_counter() - t_start}
    t0 = time.perf_counter()
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    info.update({
        "build_s": time.perf_counter() - t0, "model": model_name, "shape": shape, "extra": extra,
        "users": dataset.user_num - 1, "items": dataset.item_num - 1, "train_inter": len(train_data.dataset),
        "batch": config["train_batch_size"], "batches_per_epoch": len(train_data),
        "params": sum(p.numel() for p in model.parameters()), "threads": torch.get_num_threads(),
        "allocator": allocator,
        "d_in": getattr(getattr(model, "modalities", None), "output_dim", None),
    })
    if hasattr(model, "fusion"):
        info["meta_hidden"] = model.fusion.extractor.net[0].out_features
    return config, model, trainer, train_data, info


def case_arguments(doc: str, steps: int) -> argparse.ArgumentParser:
    """The command line of the per-case tools (probe_memory.py, profile_step.py, ab_step.py)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("case", choices=sorted(CASES), help="a case of bench_scale.py")
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--data", default="/tmp/bench_scale/data")
    p.add_argument("--work", default="/tmp/bench_scale/work")
    p.add_argument("--threads", type=int, default=2)
    return p


def stepper(model, trainer, train_data):
    """(step, batches): ``step()`` trains on the next batch as RecBole's trainer does (zero_grad, loss,
    backward, optimizer step); ``batches`` is the iterator it draws from."""
    model.train()
    batches = iter(train_data)

    def step():
        trainer.optimizer.zero_grad()
        model.calculate_loss(next(batches)).backward()
        trainer.optimizer.step()

    return step, batches


def old_steps(model, trainer, train_data, steps: int, warmup: int = 1) -> float:
    """Issue 6's method: mean training step over ``steps`` batches after ``warmup``, x batches per epoch."""
    model.train()
    times, done, it = [], 0, iter(train_data)
    while done < warmup + steps:
        t0 = time.perf_counter()
        try:
            interaction = next(it)
        except StopIteration:
            it = iter(train_data)
            continue
        trainer.optimizer.zero_grad()
        loss = model.calculate_loss(interaction)
        loss.backward()
        trainer.optimizer.step()
        if done >= warmup:
            times.append(time.perf_counter() - t0)
        done += 1
    return statistics.mean(times) * len(train_data)


def worker(key: str, args) -> None:
    config, model, trainer, train_data, info = build(key, args.data, args.work, args.threads)
    say({"ready": True, **info})
    reset_hwm()
    epoch_idx = 0
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        if cmd[0] == "epoch":
            l0 = loadavg()
            c0 = time.process_time()
            t0 = time.perf_counter()
            loss = trainer._train_epoch(train_data, epoch_idx, show_progress=False)
            dt = time.perf_counter() - t0
            epoch_idx += 1
            say({"epoch_s": dt, "cpu_s": time.process_time() - c0, "loss": float(loss), "load": [l0, loadavg()]})
        elif cmd[0] == "extras":
            l0 = loadavg()
            out = {"extrap_epoch_s": old_steps(model, trainer, train_data, int(cmd[1]))}
            t0 = time.perf_counter()
            for _ in train_data:
                pass
            out["dataloader_pass_s"] = time.perf_counter() - t0
            out["extras_load"] = [l0, loadavg()]
            say(out)
        elif cmd[0] == "quit":
            say({"peak_training_gb": hwm_gb(), "peak_rss_gb": peak_gb()})
            return


class Worker:
    def __init__(self, key: str, args):
        cmd = [sys.executable, __file__, "--worker", key, "--data", args.data, "--work", args.work,
               "--threads", str(args.threads)]
        self.key = key
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=args.work)

    def ask(self, cmd: str | None = None) -> dict:
        if cmd is not None:
            self.proc.stdin.write(cmd + "\n")
            self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith("@@ "):
                return json.loads(line[3:])
        raise RuntimeError(f"worker {self.key} ended (exit {self.proc.wait()})")


def run_group(name: str, args) -> None:
    keys, warmup, epochs = GROUPS[name]
    warmup = args.warmup if args.warmup is not None else warmup
    epochs = args.epochs if args.epochs is not None else epochs
    t_group = time.perf_counter()
    rows = {}
    workers = []
    for key in keys:  # started one after another: their loading does not overlap
        w = Worker(key, args)
        rows[key] = w.ask()
        workers.append(w)
        print(f"[{name}] {key} ready: {rows[key]['batches_per_epoch']} batches/epoch", flush=True)
    for key in keys:
        rows[key].update({"epochs": [], "warmup_epochs": warmup, "group": name, "interleaved_with": keys})
    for r in range(warmup + epochs):
        for w in workers:
            out = w.ask("epoch")
            print(f"[{name}] round {r} {w.key}: {out['epoch_s']:.2f} s (load {out['load']})", flush=True)
            if r >= warmup:
                rows[w.key]["epochs"].append(out)
            else:
                rows[w.key].setdefault("warmup", []).append(out)
    if args.steps:
        for w in workers:
            out = w.ask(f"extras {args.steps}")
            rows[w.key].update(out)
            rows[w.key]["extrap_steps"] = args.steps
            print(f"[{name}] {w.key} extras: {out}", flush=True)
    for w in workers:
        rows[w.key].update(w.ask("quit"))
        w.proc.wait()
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "recbole_metammf"], capture_output=True, text=True,
                           cwd=REPO).stdout.strip()
    RUNS.mkdir(exist_ok=True)
    for key, row in rows.items():
        times = [e["epoch_s"] for e in row["epochs"]]
        cpus = [e["cpu_s"] for e in row["epochs"] if "cpu_s" in e]
        if cpus:
            row["cpu_median_s"] = statistics.median(cpus)
        row.update({"case": key, "epoch_median_s": statistics.median(times), "when": stamp,
                    "commit": commit + ("+local changes" if dirty else ""), "group_wall_s": time.perf_counter() - t_group,
                    "cpu": _cpu_model()})
        path = RUNS / case_file(name, key)
        path.write_text(json.dumps(row, indent=1) + "\n")


# ----------------------------------------------------------------------------- profile
def profile(shape: str, tag: str, args) -> None:
    """torch.profiler over a few MetaMMF_GCN training steps, plus manual timers of its parts."""
    import torch
    from torch.profiler import ProfilerActivity, profile as tprofile

    key = f"{shape}/MetaMMF_GCN"
    config, model, trainer, train_data, info = build(key, args.data, args.work, args.threads)
    model.train()
    batches = []
    for b in train_data:
        batches.append(b)
        if len(batches) == 6:
            break

    def step(b):
        trainer.optimizer.zero_grad()
        model.calculate_loss(b).backward()
        trainer.optimizer.step()

    for b in batches[:2]:
        step(b)  # warm-up
    t0 = time.perf_counter()
    for b in batches[2:]:
        step(b)
    step_s = (time.perf_counter() - t0) / len(batches[2:])
    with tprofile(activities=[ProfilerActivity.CPU]) as prof:
        for b in batches[2:]:
            step(b)
    n = len(batches[2:])
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18, max_name_column_width=40)

    # manual timers: fusion of all items forward + backward, propagation forward + backward
    def med(fn, k=5):
        ts = []
        for _ in range(k):
            model.zero_grad(set_to_none=True)
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return statistics.median(ts)

    parts = {
        "step_s": step_s,
        "fusion_fwd_bwd_s": med(lambda: model.fusion(model.modalities.per_modality()).sum().backward()),
        "extractor_fwd_bwd_s": med(lambda: model.fusion.extractor(
            __import__("recbole_metammf.layers.fusion", fromlist=["group_blocks"]).group_blocks(
                model.modalities.per_modality())).sum().backward()),
        "compute_all_fwd_bwd_s": med(lambda: sum(t.sum() for t in model.compute_all()).backward()),
    }
    with torch.no_grad():
        parts["compute_all_nograd_s"] = med(lambda: model.compute_all())
    parts.update(step_flops(model))
    parts["matmul_gflops"] = matmul_gflops()
    parts["dense_bound_s"] = parts["dense_train_gflop"] / parts["matmul_gflops"]
    row = {"case": key, "tag": tag, "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "load": loadavg(), "profiled_steps": n, "table": table, **info, **parts}
    RUNS.mkdir(exist_ok=True)
    (RUNS / f"profile__{shape}__{tag}.json").write_text(json.dumps(row, indent=1) + "\n")
    print(table)
    print(json.dumps({k: v for k, v in parts.items()}, indent=1))


# ----------------------------------------------------------------------------- report
def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def _cpu_flags() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                return ", ".join(f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if f in flags) or "none"
    except OSError:
        pass
    return "?"


def _mem_total_gb() -> float:
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def load_runs() -> tuple[dict, dict]:
    cases, profiles = {}, {}
    for p in sorted(RUNS.glob("*.json")):
        row = json.loads(p.read_text())
        if p.name.startswith("profile__"):
            profiles[(row["case"].split("/")[0], row["tag"])] = row
        else:
            cases[(row["group"], row["case"])] = row
    return cases, profiles


def report(path: Path) -> str:
    import torch

    cases, profiles = load_runs()
    fmt = lambda x, s=".2f": "n/a" if x is None else format(x, s)  # noqa: E731

    def pair(g, a, b):
        ra, rb = cases.get((g, a)), cases.get((g, b))
        return (ra, rb) if ra and rb and ra["when"] == rb["when"] else (None, None)

    def ratio(g, a, b):
        """Median epoch ratio of two cases of one interleaved group run."""
        ra, rb = pair(g, a, b)
        return ra["epoch_median_s"] / rb["epoch_median_s"] if ra else None

    def rounds(g, a, b):
        ra, rb = pair(g, a, b)
        if not ra:
            return ""
        return ", ".join(f"{x['epoch_s'] / y['epoch_s']:.2f}" for x, y in zip(ra["epochs"], rb["epochs"]))

    def cpu_ratio(g, a, b):
        ra, rb = pair(g, a, b)
        return ra["cpu_median_s"] / rb["cpu_median_s"] if ra and "cpu_median_s" in ra and "cpu_median_s" in rb else None

    def cell(g, a, b):
        r = ratio(g, a, b)
        if r is None:
            return "n/a"
        ra, rb = pair(g, a, b)
        n = len(ra["epochs"])
        c = cpu_ratio(g, a, b)
        load = statistics.mean(e["load"][0] for e in ra["epochs"] + rb["epochs"])
        fastest = min(e["epoch_s"] for e in ra["epochs"]) / min(e["epoch_s"] for e in rb["epochs"])
        return (f"**{r:.2f}** ({ra['epoch_median_s']:.1f} s / {rb['epoch_median_s']:.1f} s, median of {n}; rounds "
                f"{rounds(g, a, b)}; fastest epoch / fastest epoch {fastest:.2f}; CPU-time ratio {fmt(c)}; "
                f"load avg {load:.1f})")

    def spread(g, a, b):
        """max / min of the per-round ratios: above 1.5 the rounds disagree too much for a verdict."""
        ra, rb = pair(g, a, b)
        if not ra or len(ra["epochs"]) < 2:
            return 1.0
        rs = [x["epoch_s"] / y["epoch_s"] for x, y in zip(ra["epochs"], rb["epochs"])]
        return max(rs) / min(rs)

    def mark(v, t, g=None, a=None, b=None):
        if v is None:
            return "n/a"
        if g and spread(g, a, b) > 1.5:
            return f"no verdict: rounds disagree (max/min {spread(g, a, b):.1f})"
        return "met" if v <= t else "**not met**"

    gcn_mid = ratio("mid-gcn", "mid/MetaMMF_GCN", "mid/LightGCN")
    gcn_mid_ref = ratio("mid-gcn", "mid/MetaMMF_GCN-ref", "mid/LightGCN")
    mf_mid_ref = ratio("mid-mf", "mid/MetaMMF_MF-ref", "mid/BPR")
    gcn_tt = ratio("tiktok-gcn", "tiktok/MetaMMF_GCN", "tiktok/LightGCN")
    mf_mid = ratio("mid-mf", "mid/MetaMMF_MF", "mid/BPR")
    mf_tt = ratio("tiktok-mf", "tiktok/MetaMMF_MF", "tiktok/BPR")
    grcn = ratio("mid-grcn", "mid/GRCN", "mid/LightGCN")
    kw_64 = ratio("kwai", "kwai/MetaMMF_GCN", "kwai/LightGCN")
    tt = cases.get(("tiktok-gcn", "tiktok/MetaMMF_GCN"))
    mem = tt.get("peak_training_gb") if tt else None
    mem_all = tt.get("peak_rss_gb") if tt else None

    any_row = next(iter(cases.values()), {})
    lines = [
        "# MetaMMF training epochs at scale (issue 12)",
        "",
        "Commands (each group rewrites its cases' JSON under `benchmarks/scale_runs/`; `--report` rewrites this file "
        "from them):",
        "",
        "```",
        "python benchmarks/bench_scale.py --generate --data /tmp/bench_scale/data --work /tmp/bench_scale/work "
        "--only GROUP [--force]",
        "python benchmarks/bench_scale.py --profile mid --tag before|after   # one MetaMMF_GCN step profiled",
        "python benchmarks/bench_scale.py --report",
        "```",
        "",
        f"Machine: {platform.machine()} ({_cpu_model()}; {_cpu_flags()}), {os.cpu_count()} cores (the load average "
        f"is given with each figure: about 1-2 is this benchmark alone, 2 torch threads; more means other jobs ran beside it), "
        f"{_mem_total_gb():.0f} GB RAM, no GPU; Python {platform.python_version()}, torch {torch.__version__}, "
        f"{any_row.get('threads', '?')} torch threads in every worker (`--threads 2`).",
        "",
        "**How an epoch is timed**: RecBole's trainer, `trainer._train_epoch(train_data, epoch)`: the very call "
        "`run_recbole.py`'s `epoch N training [time: ...]` line times (dataloader, negative sampling, loss, backward, "
        "Adam step), over whole epochs, evaluation off. Each case in its own process (pipeline `Config` -> "
        "`create_dataset` -> `data_preparation` -> `get_model` -> `get_trainer`); the compared cases of a group run "
        "**interleaved**, one epoch each in turn, so load hits them alike. Figure = median of the timed epochs, after "
        "the group's warm-up epochs (untimed). Ratios are of medians within one group run; the per-round ratios are "
        "listed too. All models share embedding size 64 (MetaMMF: 32 fused + 32 ID; MetaMMF_MF: 32 + 32 item, 64 user), "
        "2 graph layers (LightGCN `n_layers: 2`, MetaMMF_GCN two SAGE layers 64-64) and the batch size of the shape "
        "(mid 4,096; TikTok and Kwai 2,048). Every other key is the model's YAML default.",
        "",
        "## Targets",
        "",
        "| what | measured | target | |",
        "|---|---|---|---|",
        f"| MetaMMF_GCN / LightGCN epoch, mid-size (batch 4,096), before this issue's changes (extractor width d_in) | "
        f"{cell('mid-gcn-before', 'mid/MetaMMF_GCN', 'mid/LightGCN')} | <= 1.5 | "
        f"{mark(ratio('mid-gcn-before', 'mid/MetaMMF_GCN', 'mid/LightGCN'), 1.5, 'mid-gcn-before', 'mid/MetaMMF_GCN', 'mid/LightGCN')} |",
        f"| MetaMMF_GCN / LightGCN epoch, mid-size (batch 4,096), defaults (`meta_hidden_size: 64`) | {cell('mid-gcn', 'mid/MetaMMF_GCN', 'mid/LightGCN')} "
        f"| <= 1.5 | {mark(gcn_mid, 1.5, 'mid-gcn', 'mid/MetaMMF_GCN', 'mid/LightGCN')} |",
        f"| same run, MetaMMF_GCN with this issue's fast paths switched off | "
        f"{cell('mid-gcn', 'mid/MetaMMF_GCN-nofast', 'mid/LightGCN')} | | |",
        f"| same run, the released code's extractor width (`meta_hidden_size: ~`, d_in) | {cell('mid-gcn', 'mid/MetaMMF_GCN-ref', 'mid/LightGCN')} "
        f"| (<= 1.5) | {mark(gcn_mid_ref, 1.5, 'mid-gcn', 'mid/MetaMMF_GCN-ref', 'mid/LightGCN')} |",
        f"| MetaMMF_GCN / LightGCN epoch, TikTok shape (batch 2,048) | "
        f"{cell('tiktok-gcn', 'tiktok/MetaMMF_GCN', 'tiktok/LightGCN')} | <= 1.5 | {mark(gcn_tt, 1.5, 'tiktok-gcn', 'tiktok/MetaMMF_GCN', 'tiktok/LightGCN')} |",
        f"| MetaMMF_MF / BPR epoch, mid-size | {cell('mid-mf', 'mid/MetaMMF_MF', 'mid/BPR')} | <= 2.0 | {mark(mf_mid, 2.0, 'mid-mf', 'mid/MetaMMF_MF', 'mid/BPR')} |",
        f"| same run, extractor width d_in | {cell('mid-mf', 'mid/MetaMMF_MF-ref', 'mid/BPR')} | (<= 2.0) | "
        f"{mark(mf_mid_ref, 2.0, 'mid-mf', 'mid/MetaMMF_MF-ref', 'mid/BPR')} |",
        f"| MetaMMF_MF / BPR epoch, TikTok shape | {cell('tiktok-mf', 'tiktok/MetaMMF_MF', 'tiktok/BPR')} | <= 2.0 | "
        f"{mark(mf_tt, 2.0, 'tiktok-mf', 'tiktok/MetaMMF_MF', 'tiktok/BPR')} |",
        f"| GRCN / LightGCN epoch, mid-size | {cell('mid-grcn', 'mid/GRCN', 'mid/LightGCN')} | <= 3 | {mark(grcn, 3, 'mid-grcn', 'mid/GRCN', 'mid/LightGCN')} |",
        f"| peak memory, MetaMMF_GCN training, TikTok shape | {fmt(mem)} GB while training (whole process, "
        f"data loading included: {fmt(mem_all)} GB) | <= 2 GB | {mark(mem, 2.0)} |",
        f"| Kwai shape, MetaMMF_GCN / LightGCN epoch, reference widths (`meta_hidden_size` = d_in) | "
        f"{cell('kwai-ref', 'kwai/MetaMMF_GCN-ref', 'kwai/LightGCN')} | report | |",
        f"| Kwai shape, MetaMMF_GCN / LightGCN epoch, defaults (`meta_hidden_size: 64`) | "
        f"{cell('kwai', 'kwai/MetaMMF_GCN', 'kwai/LightGCN')} | <= 5 | {mark(kw_64, 5)} |",
        f"| issue 25: MetaMMF_GCN's shipped defaults / its defaults before issue 25 (`content_scale: none`), the real "
        f"TikTok subset (`dataset/tiktok-diffmm`, every key the YAML's) | "
        f"{cell('diffmm-reference', 'diffmm/MetaMMF_GCN', 'diffmm/MetaMMF_GCN-before')} | <= 5 | "
        f"{mark(ratio('diffmm-reference', 'diffmm/MetaMMF_GCN', 'diffmm/MetaMMF_GCN-before'), 5)} |",
        f"| same run, the reference settings (`properties/reference/MetaMMF-ref-movielens.yaml`) / the defaults "
        f"before issue 25 | {cell('diffmm-reference', 'diffmm/MetaMMF_GCN-reference', 'diffmm/MetaMMF_GCN-before')} "
        f"| report | |",
        f"| issue 25, the scale change alone: MetaMMF_GCN (`rms`, shipped) / LightGCN epoch, mid-size | "
        f"{cell('mid-scale', 'mid/MetaMMF_GCN-rms', 'mid/LightGCN')} | <= 1.29 (round 4) | "
        f"{mark(ratio('mid-scale', 'mid/MetaMMF_GCN-rms', 'mid/LightGCN'), 1.29)} |",
        f"| same run, MetaMMF_MF (`gate`, shipped) / BPR epoch | "
        f"{cell('mid-scale', 'mid/MetaMMF_MF-gate', 'mid/BPR')} | <= 1.70 (round 4) | "
        f"{mark(ratio('mid-scale', 'mid/MetaMMF_MF-gate', 'mid/BPR'), 1.70)} |",
        f"| same run, MetaMMF_MF with `rms` / BPR epoch | {cell('mid-scale', 'mid/MetaMMF_MF-rms', 'mid/BPR')} | report | |",
        f"| same run, the unscaled content (`none`): MetaMMF_GCN / LightGCN, MetaMMF_MF / BPR | "
        f"{cell('mid-scale', 'mid/MetaMMF_GCN-unscaled', 'mid/LightGCN')}; "
        f"{cell('mid-scale', 'mid/MetaMMF_MF-unscaled', 'mid/BPR')} | report | |",
        "",
        "## Every case",
        "",
        "| case | users x items | train inter. | batch | batches/epoch | epoch median (s) | timed epochs (s) [load avg] | "
        "warm-up | old method: 20 steps extrap. (s) | dataloader pass alone (s) | d_in / meta hidden | params | peak RSS "
        "training / whole (GB) | measured | commit |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (group, key), r in sorted(cases.items()):
        eps = ", ".join(f"{e['epoch_s']:.1f} [{e['load'][0]:.1f}]" for e in r["epochs"])
        dims = f"{r['d_in']} / {r.get('meta_hidden')}" if r.get("d_in") else ""
        lines.append(
            f"| {group}: {key} | {r['users']:,} x {r['items']:,} | {r['train_inter']:,} | {r['batch']} | {r['batches_per_epoch']} | "
            f"{r['epoch_median_s']:.2f} | {eps} | {r['warmup_epochs']} | {fmt(r.get('extrap_epoch_s'))} | "
            f"{fmt(r.get('dataloader_pass_s'))} | {dims} | {r['params']:,} | {fmt(r.get('peak_training_gb'))} / "
            f"{fmt(r.get('peak_rss_gb'))} | {r['when']} | {r['commit']} |"
        )
    for (shape, tag), p in sorted(profiles.items(), key=lambda kv: (kv[0][0], kv[0][1] != "before", kv[0][1])):
        lines += [
            "",
            f"## Profile of one MetaMMF_GCN training step, {shape}, {tag} ({p['when']}, load {p['load']})",
            "",
            f"* step (mean of {p['profiled_steps']}, unprofiled): {p['step_s']:.3f} s; fusion of all {p['items']:,} items "
            f"forward + backward {p['fusion_fwd_bwd_s']:.3f} s, of which the meta extractor ({p['d_in']}-"
            f"{p.get('meta_hidden')}-5) {p['extractor_fwd_bwd_s']:.3f} s; `compute_all` (fusion + SAGE) forward + "
            f"backward {p['compute_all_fwd_bwd_s']:.3f} s; without grad {p['compute_all_nograd_s']:.3f} s;",
            f"* dense matmul work per step: {p['dense_train_gflop']:.1f} GFLOP (fusion {p['fusion_train_gflop']:.1f}, "
            f"of which extractor {p['extractor_train_gflop']:.1f}; SAGE linears {p['sage_train_gflop']:.1f}); sparse "
            f"products {p['spmm_gflop']:.2f} GFLOP; measured matmul throughput {p['matmul_gflops']:.0f} GFLOP/s, so "
            f"the dense work alone takes at least {p['dense_bound_s']:.3f} s.",
            "",
            "```",
            p["table"].rstrip(),
            "```",
        ]
    # the allocator A/B: each case beside itself with glibc's own malloc settings, interleaved in one group
    ab = []
    for g in ("mid-malloc", "tiktok-malloc"):
        for key in GROUPS[g][0][::2]:
            ra, rb = pair(g, key, f"{key}-glibc")
            if not ra:
                continue
            light = key.split("/")[0] + "/LightGCN"
            vs = ("" if key == light else f"{ratio(g, key, light):.2f} / {ratio(g, f'{key}-glibc', f'{light}-glibc'):.2f}")
            ab.append(f"| {g}: {key} | {ra['epoch_median_s']:.2f} | {rb['epoch_median_s']:.2f} | "
                      f"**{rb['epoch_median_s'] / ra['epoch_median_s']:.2f}** ({rounds(g, f'{key}-glibc', key)}) | {vs} | "
                      f"{fmt(ra.get('peak_training_gb'))} / {fmt(rb.get('peak_training_gb'))} | {ra['when']}, {ra['commit']} |")
    if ab:
        lines += [
            "",
            "## glibc's malloc settings against the plugin's (`recbole_metammf/allocator.py`)",
            "",
            "The training processes fix glibc's mmap threshold at 32 MB and its trim threshold at 1 GB (the same "
            "maths; a step's blocks are reused instead of faulted in anew). Each case ran interleaved beside itself "
            "with glibc's defaults (`METAMMF_MALLOC=default`, the `-glibc` cases), "
            "`python benchmarks/bench_scale.py --only mid-malloc,tiktok-malloc --force`.",
            "",
            "| case | epoch, plugin's settings (s) | epoch, glibc's (s) | glibc / plugin (per round) | / LightGCN, plugin's "
            "/ glibc's | peak RSS training, plugin's / glibc's (GB) | measured, commit |",
            "|---|---|---|---|---|---|---|",
            *ab,
        ]

    # reconciliation with issue 6's method: the same pairs by 20 extrapolated steps and by full epochs
    pairs = [("mid-gcn-before", "mid/MetaMMF_GCN", "mid/LightGCN"), ("mid-gcn", "mid/MetaMMF_GCN", "mid/LightGCN"),
             ("mid-gcn", "mid/MetaMMF_GCN-ref", "mid/LightGCN"), ("mid2048", "mid2048/MetaMMF_GCN", "mid2048/LightGCN"),
             ("mid-mf", "mid/MetaMMF_MF", "mid/BPR"), ("mid-grcn", "mid/GRCN", "mid/LightGCN"),
             ("tiktok-gcn", "tiktok/MetaMMF_GCN", "tiktok/LightGCN"), ("tiktok-mf", "tiktok/MetaMMF_MF", "tiktok/BPR")]
    rec = []
    for g, a, b in pairs:
        ra, rb = pair(g, a, b)
        if not ra or "extrap_epoch_s" not in ra or "extrap_epoch_s" not in rb:
            continue
        rec.append(
            f"| {g}: {a} / {b} | {ra['epoch_median_s'] / rb['epoch_median_s']:.2f} | "
            f"{ra['extrap_epoch_s'] / rb['extrap_epoch_s']:.2f} | {ra['extrap_epoch_s'] / ra['epoch_median_s']:.2f} / "
            f"{rb['extrap_epoch_s'] / rb['epoch_median_s']:.2f} | {ra['dataloader_pass_s']:.1f} / {rb['dataloader_pass_s']:.1f} "
            f"({100 * rb['dataloader_pass_s'] / rb['epoch_median_s']:.0f} % of {b.split('/')[1]}'s epoch) | "
            f"{ra['extras_load'][0]:.1f} |")
    if rec:
        lines += [
            "",
            "## Issue 6's method (20 steps after one warm-up, extrapolated) beside full epochs, same processes",
            "",
            "After its timed epochs each worker also timed 20 training steps the old way and one pass over RecBole's "
            "training dataloader alone (batching + negative sampling, no model), one worker after the other (not "
            "interleaved).",
            "",
            "| pair | ratio, full epochs | ratio, 20 steps extrapolated | extrapolated / full epoch (each) | dataloader "
            "pass alone (s) | load avg |",
            "|---|---|---|---|---|---|",
            *rec,
        ]

    # the bound: MetaMMF_GCN does LightGCN's kind of work (propagation over the same graph, the same batches)
    # plus its dense matmuls, which take at least dense GFLOP / measured GFLOP/s
    after = profiles.get(("mid", "after")) or profiles.get(("mid", "before"))
    l_row = cases.get(("mid-gcn", "mid/LightGCN"))
    if after and l_row:
        best = max((p for (sh, _), p in profiles.items() if sh == "mid"), key=lambda p: p["matmul_gflops"])
        after = dict(after, matmul_gflops=best["matmul_gflops"], dense_bound_s=after["dense_train_gflop"] / best["matmul_gflops"])
        nb = l_row["batches_per_epoch"]
        l_epoch = min(e["epoch_s"] for e in l_row["epochs"])  # its least disturbed epoch
        bound = (l_epoch + nb * after["dense_bound_s"]) / l_epoch
        lines += [
            "",
            "## What bounds MetaMMF_GCN / LightGCN (mid-size)",
            "",
            f"MetaMMF_GCN's step does at least what LightGCN's does (two propagations over the same graph, the same "
            f"batches, loss and Adam step) plus its dense matmuls: {after['dense_train_gflop']:.1f} GFLOP per step "
            f"(profile '{after['tag']}'), at the best matmul throughput measured in any profile run "
            f"({after['matmul_gflops']:.0f} GFLOP/s, profile '{best['tag']}'; the machine was shared, a quiet one "
            f"measures more) at least "
            f"{after['dense_bound_s']:.3f} s a step, {nb * after['dense_bound_s']:.1f} s an epoch of {nb} batches. "
            f"Against LightGCN's fastest epoch of the same group ({l_epoch:.1f} s) the ratio cannot go below about "
            f"**{bound:.2f}** with the reference meta extractor ({after['d_in']}-{after.get('meta_hidden')}-5: "
            f"{after['extractor_train_gflop']:.1f} of the {after['dense_train_gflop']:.1f} GFLOP). The measured ratio "
            f"is {fmt(gcn_mid)}.",
        ]
    notes = RUNS / "notes.md"
    if notes.exists():
        lines += ["", notes.read_text().rstrip()]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="/tmp/bench_scale/data", help="DATA_DIR holding scale-mid/-tiktok/-kwai")
    parser.add_argument("--work", default="/tmp/bench_scale/work", help="working directory (RecBole's log/, saved/)")
    parser.add_argument("--generate", action="store_true", help="write / generate the missing data sets first")
    parser.add_argument("--only", default=None, help=f"comma-separated groups: {', '.join(GROUPS)}")
    parser.add_argument("--force", action="store_true", help="rerun groups whose JSON files exist")
    parser.add_argument("--epochs", type=int, default=None, help="timed epochs (default: the group's)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed warm-up epochs (default: the group's)")
    parser.add_argument("--steps", type=int, default=20, help="old-method steps per case after the epochs (0: skip)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--report", action="store_true", help="only rewrite RESULTS.md from scale_runs/")
    parser.add_argument("--profile", default=None, help="profile a MetaMMF_GCN step on this shape")
    parser.add_argument("--tag", default="before", help="profile tag (before / after)")
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    if args.worker:
        worker(args.worker, args)
        return
    if args.generate:
        generate(args.data, args.work)
    if args.profile:
        profile(args.profile, args.tag, args)
    elif not args.report:
        groups = args.only.split(",") if args.only else list(GROUPS)
        for g in groups:
            done = all((RUNS / case_file(g, k)).exists() for k in GROUPS[g][0])
            if done and not args.force:
                print(f"[{g}] done already (--force reruns it)")
                continue
            run_group(g, args)
    Path(args.out).write_text(report(Path(args.out)))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
