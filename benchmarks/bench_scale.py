"""MetaMMF at the real datasets' scale, as ratios against RecBole's own models (issue 6).

On full-size synthetic data (``python -m dataset_converters synthetic --like K --scale 1``,
converted with ``python -m dataset_converters K``), every case runs in its own
process (so its peak RSS is its own) through RecBole's own pipeline: ``Config`` ->
``create_dataset`` -> ``data_preparation`` -> ``get_model`` -> ``get_trainer``. All
models of one shape share the data, the batch size (2048, the ref settings' 3000 for
the reference MovieLens case), embedding size 64 (MetaMMF: 32 fused + 32 ID) and the
number of graph layers (2).

Training time: RecBole's training step (``zero_grad``, ``calculate_loss``,
``backward``, ``optimizer.step``, batches drawn from RecBole's train dataloader with
its negative sampling) is timed over ``--steps`` batches after ``--warmup`` untimed
ones, and the epoch time is extrapolated as mean step time x batches per epoch (said
so in the results). Evaluation: RecBole's ``Trainer.evaluate`` on the full-sort test
set, timed once, entire. Memory: the peak RSS of the case's process (dataset
included) and its RSS once the dataset is loaded.

For MetaMMF_GCN on TikTok the case also profiles the step: the fusion of all items
(forward + backward) alone, its FLOPs counted from the layer shapes, and the
machine's measured fp32 matmul throughput, which bounds how fast the fusion can be.

    python benchmarks/bench_scale.py [--data /tmp/bench_scale/data] [--generate]
        [--steps 30] [--big-steps 3] [--out benchmarks/RESULTS.md]
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
sys.path.insert(0, str(REPO))

SHAPES = ("tiktok", "movielens", "kwai")
COMMON = {"embedding_size": 64, "id_embedding_size": 32, "n_layers": 2, "train_batch_size": 2048}  # MetaMMF: 32 fused + 32 ID = 64
REF_YAML = REPO / "properties" / "reference" / "MetaMMF-ref-movielens.yaml"

# (label, model, shape, extra config, config files, evaluate, profile, steps key)
CASES = [
    ("LightGCN", "LightGCN", "tiktok", {}, [], True, False, "steps"),
    ("MetaMMF_GCN (cp)", "MetaMMF_GCN", "tiktok", {"fusion_form": "cp"}, [], True, True, "steps"),
    ("BPR", "BPR", "tiktok", {}, [], False, False, "steps"),
    ("MetaMMF_MF (cp)", "MetaMMF_MF", "tiktok", {"fusion_form": "cp"}, [], False, False, "steps"),
    ("MetaMMF_GCN ref settings", "MetaMMF_GCN", "movielens", {"train_batch_size": 3000}, [str(REF_YAML)], True, False, "big_steps"),
    ("LightGCN", "LightGCN", "kwai", {}, [], True, False, "steps"),
    ("MetaMMF_GCN (cp)", "MetaMMF_GCN", "kwai", {"fusion_form": "cp"}, [], True, False, "big_steps"),
]


def rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


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


def fusion_flops(model, n_items: int) -> dict:
    """Matmul FLOPs of the fusion of ``n_items`` items: forward, and forward + backward.

    Backward of a matmul costs two matmuls (grad of the weight, grad of the input)
    except where the input needs no gradient (the constant dense features): one.
    """
    from recbole_metammf.layers.fusion import MetaFusionLayer

    fusion = model.fusion
    d_in = fusion.extractor.net[0].in_features
    hid = fusion.extractor.net[0].out_features
    d_s = fusion.extractor.net[2].out_features
    # (in, out, input needs grad); the dense features do not, the token embeddings do
    mats = [(d_in, hid, False), (hid, d_s, True)]
    for i, layer in enumerate(fusion.layers):
        assert isinstance(layer, MetaFusionLayer)
        first = i == 0
        if layer.form == "cp":
            mats += [(layer.in_dim, layer.out_dim, not first), (layer.in_dim, layer.rank, not first),
                     (d_s, layer.rank, True), (layer.rank, layer.out_dim, True)]
        elif layer.form == "collapsed":
            mats += [(layer.in_dim, layer.out_dim, not first), (layer.in_dim, layer.rank, not first),
                     (layer.rank, layer.out_dim, True)]
        else:
            mats += [(layer.in_dim, layer.out_dim, not first), (layer.in_dim, d_s * layer.out_dim, not first)]
    fwd = sum(2 * n_items * a * b for a, b, _ in mats)
    train = sum(2 * n_items * a * b * (3 if g else 2) for a, b, g in mats)
    return {"fusion_fwd_gflop": fwd / 1e9, "fusion_train_gflop": train / 1e9}


def run_case(label, model_name, shape, extra, files, evaluate, profile, steps, warmup, data, work) -> dict:
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    import recbole_metammf  # noqa: F401  (registers the plugin models)

    t_start = time.perf_counter()
    cfg = {
        **COMMON,
        "data_path": data,
        "checkpoint_dir": os.path.join(work, "saved"),
        "save_dataset": True,  # later cases of the same shape reload RecBole's processed dataset
        "show_progress": False,
        "state": "ERROR",
        "seed": 2020,
        "reproducibility": False,
        **extra,
    }
    dataset_name = f"scale-{shape}"
    own_yaml = os.path.join(data, dataset_name, f"{dataset_name}.yaml")
    config = Config(model=model_name, dataset=dataset_name, config_file_list=files or None, config_dict=cfg)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    rss_data = rss_gb()
    t_data = time.perf_counter() - t_start

    t0 = time.perf_counter()
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    t_build = time.perf_counter() - t0

    # --- training steps: RecBole's _train_epoch body, on RecBole's batches ---
    model.train()
    n_batches = len(train_data)
    step_times = []
    it = iter(train_data)
    done = 0
    while done < warmup + steps:
        t0 = time.perf_counter()
        try:
            interaction = next(it)
        except StopIteration:
            it = iter(train_data)
            continue
        interaction = interaction.to(config["device"])
        trainer.optimizer.zero_grad()
        loss = model.calculate_loss(interaction)
        if isinstance(loss, tuple):
            loss = sum(loss)
        loss.backward()
        trainer.optimizer.step()
        if done >= warmup:
            step_times.append(time.perf_counter() - t0)
        done += 1
    step = statistics.mean(step_times)
    row = {
        "label": label, "model": model_name, "shape": shape,
        "users": dataset.user_num - 1, "items": dataset.item_num - 1, "train_inter": len(train_data.dataset),
        "batch": config["train_batch_size"], "batches_per_epoch": n_batches,
        "timed_steps": steps, "step_s": step, "step_median_s": statistics.median(step_times),
        "epoch_s": step * n_batches, "load_s": t_data, "build_s": t_build,
        "rss_after_data_gb": rss_data, "threads": torch.get_num_threads(),
        "params": sum(p.numel() for p in model.parameters()),
        "d_in": getattr(getattr(model, "modalities", None), "output_dim", None),
        "dataset_yaml": os.path.isfile(own_yaml),
    }

    if profile and hasattr(model, "fusion"):
        # where the time of a MetaMMF_GCN step goes: the fusion of all items alone
        fus = []
        for _ in range(max(3, steps // 5)):
            model.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            model.fusion(model.modalities()).sum().backward()
            fus.append(time.perf_counter() - t0)
        with torch.no_grad():
            t0 = time.perf_counter()
            model.compute_all()
            row["compute_all_nograd_s"] = time.perf_counter() - t0
        row["fusion_train_s"] = statistics.median(fus)
        row.update(fusion_flops(model, dataset.item_num))
        row["matmul_gflops"] = matmul_gflops()
        row["fusion_bound_s"] = row["fusion_train_gflop"] / row["matmul_gflops"]

    if evaluate:
        t0 = time.perf_counter()
        result = trainer.evaluate(test_data, load_best_model=False, show_progress=False)
        row["eval_s"] = time.perf_counter() - t0
        row["test_ndcg@10"] = result.get("ndcg@10")
    row["peak_rss_gb"] = peak_gb()
    row["total_s"] = time.perf_counter() - t_start
    return row


def in_subprocess(index: int, args) -> dict:
    cmd = [sys.executable, __file__, "--case", str(index), "--data", args.data, "--work", args.work,
           "--steps", str(args.steps), "--big-steps", str(args.big_steps), "--warmup", str(args.warmup)]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=args.work)
    if out.returncode != 0:
        label, model, shape = CASES[index][:3]
        tail = (out.stderr or out.stdout).strip().splitlines()[-5:]
        return {"label": label, "model": model, "shape": shape, "error": " | ".join(tail),
                "wall_s": time.perf_counter() - t0}
    return json.loads(out.stdout.strip().splitlines()[-1])


def generate(data: str, work: str) -> None:
    for shape in SHAPES:
        if os.path.isfile(os.path.join(data, f"scale-{shape}", f"scale-{shape}.inter")) or os.path.isfile(
            os.path.join(data, f"scale-{shape}", f"scale-{shape}.train.inter")
        ):
            continue
        raw = os.path.join(work, "raw", shape)
        py = [sys.executable, "-m", "dataset_converters"]
        subprocess.run([*py, "synthetic", "--like", shape, "--scale", "1.0", "--out", raw], check=True, cwd=REPO)
        subprocess.run([*py, shape, "--src", raw, "--out", data, "--name", f"scale-{shape}"], check=True, cwd=REPO)


def fmt(x, spec=".2f", none="n/a"):
    return none if x is None else format(x, spec)


def report(rows: list[dict], args, wall: float) -> str:
    by = {(r["shape"], r["label"]): r for r in rows}
    ok = lambda r: r is not None and "error" not in r  # noqa: E731

    def ratio(a, b, key):
        ra, rb = by.get(a), by.get(b)
        return ra[key] / rb[key] if ok(ra) and ok(rb) and key in ra and key in rb else None

    gcn, lgcn = ("tiktok", "MetaMMF_GCN (cp)"), ("tiktok", "LightGCN")
    mf, bpr = ("tiktok", "MetaMMF_MF (cp)"), ("tiktok", "BPR")
    ml, kw, kwl = ("movielens", "MetaMMF_GCN ref settings"), ("kwai", "MetaMMF_GCN (cp)"), ("kwai", "LightGCN")
    r_gcn, r_mf, r_eval = ratio(gcn, lgcn, "epoch_s"), ratio(mf, bpr, "epoch_s"), ratio(gcn, lgcn, "eval_s")
    g = by.get(gcn)
    mark = lambda v, t: "n/a" if v is None else ("met" if v <= t else "**not met**")  # noqa: E731
    load = os.getloadavg()
    import torch

    lines = [
        "# MetaMMF at full scale (issue 6)",
        "",
        f"Command: `python benchmarks/bench_scale.py --data {args.data} --steps {args.steps} "
        f"--big-steps {args.big_steps} --warmup {args.warmup}` (total wall time {wall / 60:.1f} min).",
        "",
        f"Machine: {platform.machine()} {platform.processor() or ''} ({_cpu_model()}), {os.cpu_count()} cores shared "
        f"with other jobs (load average at the end {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f}), "
        f"{_mem_total_gb():.0f} GB RAM, no GPU; Python {platform.python_version()}, torch {torch.__version__}, "
        f"{rows[0].get('threads', '?')} torch threads. Measured fp32 matmul throughput: "
        f"{fmt(g.get('matmul_gflops') if ok(g) else None, '.0f')} GFLOP/s.",
        "",
        "Data: full-size synthetic data from `python -m dataset_converters synthetic --like K --scale 1.0`, converted "
        "with `python -m dataset_converters K` (the authors' train/valid/test split). All models of one shape see the "
        "same data, batch size, embedding size 64 (MetaMMF: 32 fused + 32 ID) and 2 graph layers (LightGCN `n_layers: 2`, "
        "MetaMMF_GCN two SAGE layers 64-64).",
        "",
        f"**Epoch times are extrapolated**: RecBole's training step (its dataloader and negative sampling included) is "
        f"timed over {args.steps} batches (TikTok, Kwai LightGCN) or {args.big_steps} batches (reference MovieLens, Kwai "
        f"MetaMMF_GCN) after {args.warmup} untimed warm-up batches; epoch = mean step x batches per epoch. Evaluation is "
        "RecBole's full-sort `Trainer.evaluate` on the whole test set, timed once. Memory is the peak RSS of the case's "
        "own process (dataset, dataloaders and model included). The machine is shared, so absolute times are noisy; "
        "the ratios compare runs of the same script minutes apart.",
        "",
        "## Targets",
        "",
        "| what | measured | target | |",
        "|---|---|---|---|",
        f"| MetaMMF_GCN (cp) epoch / LightGCN epoch, TikTok | {fmt(r_gcn)} | <= 2.0 | {mark(r_gcn, 2.0)} |",
        f"| MetaMMF_MF (cp) epoch / BPR epoch, TikTok | {fmt(r_mf)} | <= 3.0 | {mark(r_mf, 3.0)} |",
        f"| full-sort evaluation MetaMMF_GCN / LightGCN, TikTok | {fmt(r_eval)} | <= 1.2 | {mark(r_eval, 1.2)} |",
        f"| peak memory, MetaMMF_GCN training run, TikTok | {fmt(g.get('peak_rss_gb') if ok(g) else None)} GB | <= 4 GB | "
        f"{mark(g.get('peak_rss_gb') if ok(g) else None, 4.0)} |",
    ]
    r = by.get(ml)
    if ok(r):
        lines.append(f"| reference MovieLens settings, one epoch | {r['epoch_s'] / 3600:.1f} h (extrapolated), peak "
                     f"{r['peak_rss_gb']:.1f} GB | within 24 GB | {mark(r['peak_rss_gb'], 24)} |")
    r = by.get(kw)
    if ok(r):
        lines.append(f"| Kwai shape, MetaMMF_GCN (cp) | epoch {r['epoch_s'] / 60:.0f} min (extrapolated), evaluation "
                     f"{fmt(r.get('eval_s'), '.0f')} s, peak {r['peak_rss_gb']:.1f} GB | within 24 GB | "
                     f"{mark(r['peak_rss_gb'], 24)} |")
    lines += [
        "",
        "## Every case",
        "",
        "| shape | model | users x items | train inter. | batch | batches/epoch | step (s) | epoch (s, extrap.) | "
        "full-sort eval (s) | test NDCG@10 | d_in | params | RSS after data (GB) | peak RSS (GB) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if not ok(r):
            lines.append(f"| {r['shape']} | {r['label']} | failed: {r.get('error')} |" + " |" * 11)
            continue
        lines.append(
            f"| {r['shape']} | {r['label']} | {r['users']:,} x {r['items']:,} | {r['train_inter']:,} | {r['batch']} | "
            f"{r['batches_per_epoch']} | {r['step_s']:.3f} | {r['epoch_s']:.0f} | {fmt(r.get('eval_s'), '.1f')} | "
            f"{fmt(r.get('test_ndcg@10'), '.4f')} | {r['d_in'] or ''} | {r['params']:,} | "
            f"{r['rss_after_data_gb']:.2f} | {r['peak_rss_gb']:.2f} |"
        )
    if ok(g) and "fusion_train_s" in g:
        share = g["fusion_train_s"] / g["step_s"]
        l_step = by[lgcn]["step_s"] if ok(by.get(lgcn)) else None
        lines += [
            "",
            "## Where a MetaMMF_GCN step goes (TikTok)",
            "",
            f"* whole training step: {g['step_s']:.3f} s (LightGCN: {fmt(l_step, '.3f')} s);",
            f"* fusion of all {g['items']:,} items alone, forward + backward: {g['fusion_train_s']:.3f} s "
            f"({100 * share:.0f}% of the step);",
            f"* its matmul work: {g['fusion_fwd_gflop']:.1f} GFLOP forward, {g['fusion_train_gflop']:.1f} GFLOP forward + "
            f"backward (meta extractor {g['d_in']}-{g['d_in']}-5, as the released code, then the CP layers);",
            f"* at the measured {g['matmul_gflops']:.0f} GFLOP/s that is at least {g['fusion_bound_s']:.3f} s per step: "
            f"the fusion alone bounds the epoch at {g['fusion_bound_s'] * g['batches_per_epoch']:.0f} s, i.e. "
            + (f"{g['fusion_bound_s'] / l_step:.1f}x a whole LightGCN step" if l_step else "")
            + ";",
            f"* a no-grad `compute_all` (fusion + propagation, what evaluation runs once): "
            f"{g['compute_all_nograd_s']:.3f} s.",
        ]
    return "\n".join(lines) + "\n"


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def _mem_total_gb() -> float:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="/tmp/bench_scale/data", help="DATA_DIR holding scale-tiktok/-movielens/-kwai")
    parser.add_argument("--work", default="/tmp/bench_scale/work", help="working directory (logs, saved datasets)")
    parser.add_argument("--generate", action="store_true", help="generate and convert the missing shapes first")
    parser.add_argument("--steps", type=int, default=30, help="timed batches per case (TikTok, Kwai LightGCN)")
    parser.add_argument("--big-steps", type=int, default=3, help="timed batches (reference MovieLens, Kwai MetaMMF_GCN)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--only", default=None, help="comma-separated case indices (debugging)")
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    parser.add_argument("--case", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.makedirs(args.work, exist_ok=True)
    if args.case is not None:
        label, model, shape, extra, files, evaluate, profile, key = CASES[args.case]
        steps = args.steps if key == "steps" else args.big_steps
        print(json.dumps(run_case(label, model, shape, extra, files, evaluate, profile, steps, args.warmup,
                                  args.data, args.work)))
        return
    if args.generate:
        generate(args.data, args.work)
    t0 = time.perf_counter()
    indices = [int(i) for i in args.only.split(",")] if args.only else range(len(CASES))
    rows = []
    for i in indices:
        row = in_subprocess(i, args)
        print(json.dumps(row), flush=True)
        rows.append(row)
    text = report(rows, args, time.perf_counter() - t0)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
