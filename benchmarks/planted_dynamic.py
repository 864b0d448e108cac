"""Planted data where *which* modality carries an item's meaning differs from item to item:
the case item-specific (dynamic) fusion is for. MetaMMF_MF with its default YAML against BPR.

Every item belongs to one of K taste clusters; each of its three dense modalities shows a
cluster prototype, but only one modality (drawn per item) shows the item's *own* cluster
cleanly; the other two show a decoy (another cluster's prototype, weaker and noisier). A
static fusion (one weighting of the modalities for every item) cannot tell the carrier
from the decoys; a fusion that reads the item first can. Users like one or two clusters;
interactions are drawn mostly from them (~19 per user), and items have long-tailed
popularity, so many items have few interactions and their content matters.

    python benchmarks/planted_dynamic.py                   # generate (once), run, write the table
    python benchmarks/planted_dynamic.py --report          # rewrite the table from the trial files

The models run through the benchmark runner (resumable) with RecBole's and the plugin's
defaults (per-user random 8:1:1 split, full ranking, early stopping on validation
NDCG@10); the table (`benchmarks/planted_dynamic_results.md`) gives test NDCG@10 per seed
and MetaMMF_MF's gain over BPR. A benchmark, not a test: nothing asserts a number.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

NAME = "planted-dynamic"
# name -> generator settings; the first is the benchmark, the second a sparser variant with a
# flatter popularity (fewer interactions per item, so IDs learn less and content counts more)
VARIANTS = {"planted-dynamic": dict(n_users=4_000, tail=1.5),
            "planted-dynamic-sparse": dict(n_users=2_000, tail=3.0)}
DATA = os.path.join(REPO, "dataset")
OUT = os.path.join(HERE, "validation", "planted_dynamic")


def out_dir(name: str) -> str:
    return OUT if name == NAME else f"{OUT}-{name[len(NAME) + 1:]}"
TABLE = os.path.join(HERE, "planted_dynamic_results.md")
MODELS = ["MetaMMF_MF", "BPR", "VBPR", "MetaMMF_GCN", "LightGCN"]
DIMS = (64, 64, 32)


def generate(root: str, n_items: int = 10_000, n_users: int = 4_000, k: int = 40, per_user: float = 19.0,
             seed: int = 0, tail: float = 1.5, name: str = NAME) -> str:
    """Write ``root/name/name.inter`` and ``.item`` (three float_seq modalities); return the folder."""
    rng = np.random.default_rng(seed)
    cluster = rng.integers(k, size=n_items)  # [n_items]
    carrier = rng.integers(len(DIMS), size=n_items)  # which modality shows the own cluster
    protos = [rng.normal(size=(k, d)) for d in DIMS]
    feats = []
    for m, d in enumerate(DIMS):
        decoy = (cluster + rng.integers(1, k, size=n_items)) % k  # any other cluster
        own = carrier == m
        x = np.where(own[:, None], protos[m][cluster], 0.6 * protos[m][decoy])
        noise = np.where(own[:, None], 0.3, 0.7)
        feats.append((x + noise * rng.normal(size=(n_items, d))).astype(np.float32))
    popularity = rng.pareto(tail, size=n_items) + 1.0  # long tail (heavier for a smaller tail index)
    members = [np.nonzero(cluster == c)[0] for c in range(k)]
    rows = set()
    for u in range(n_users):
        likes = rng.choice(k, size=rng.integers(1, 3), replace=False)
        n = max(5, int(rng.poisson(per_user)))
        pool = np.concatenate([members[c] for c in likes])
        p = popularity[pool] / popularity[pool].sum()
        n_in = min(len(pool), int(round(0.85 * n)))
        chosen = list(rng.choice(pool, size=n_in, replace=False, p=p))
        chosen += list(rng.choice(n_items, size=n - n_in, replace=False))  # some noise
        rows |= {(u, int(i)) for i in chosen}
    folder = os.path.join(root, name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{name}.inter"), "w") as f:
        f.write("user_id:token\titem_id:token\n")
        f.writelines(f"{u}\t{i}\n" for u, i in sorted(rows))
    with open(os.path.join(folder, f"{name}.item"), "w") as f:
        f.write("item_id:token\tm0:float_seq\tm1:float_seq\tm2:float_seq\n")
        for i in range(n_items):
            f.write(f"{i}\t" + "\t".join(" ".join(f"{v:.5f}" for v in x[i]) for x in feats) + "\n")
    with open(os.path.join(folder, f"{name}.yaml"), "w") as f:
        f.write(f"# {name}: planted data, the carrier modality varies per item (benchmarks/planted_dynamic.py)\n"
                "load_col: {inter: [user_id, item_id], item: [item_id, m0, m1, m2]}\n"
                "modality_fields: [m0, m1, m2]\n")
    print(f"wrote {folder}: {n_users:,} users, {n_items:,} items, {len(rows):,} interactions "
          f"({len(rows) / n_users:.1f} per user)")
    return folder


def run(models, seeds: int, name: str = NAME) -> None:
    import run_benchmark

    if not os.path.isfile(os.path.join(DATA, name, f"{name}.inter")):
        generate(DATA, name=name, **VARIANTS[name])
    run_benchmark.main(["--models", *models, "--datasets", name, "--seeds", str(seeds), "--out", out_dir(name),
                        f"--data_path={DATA}"])


def _variant_lines(name: str) -> list[str]:
    trials = {}
    for path in glob.glob(os.path.join(out_dir(name), "trials", "*.json")):
        t = json.load(open(path))
        if t.get("status") == "ok":
            trials[(t["model"], t["seed"])] = t
    if not trials:
        return []
    v = VARIANTS[name]
    seeds = sorted({s for _, s in trials})
    lines = [f"## {name}", "",
             f"`python benchmarks/planted_dynamic.py --variant {name}`: 10,000 items, {v['n_users']:,} users, "
             f"~19 interactions per user, popularity tail index {v['tail']}. Test NDCG@10 (best epoch):", "",
             "| model | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |", "|---|" + "---|" * (len(seeds) + 1)]
    means = {}
    for m in MODELS:
        vals = [trials[(m, s)]["test_result"]["ndcg@10"] for s in seeds if (m, s) in trials]
        if not vals:
            continue
        means[m] = float(np.mean(vals))
        cells = [f"{trials[(m, s)]['test_result']['ndcg@10']:.4f} ({trials[(m, s)]['best_epoch']})"
                 if (m, s) in trials else "—" for s in seeds]
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {means[m]:.4f} |")
    if "MetaMMF_MF" in means and "BPR" in means:
        lines += ["", f"MetaMMF_MF / BPR test NDCG@10: {means['MetaMMF_MF'] / means['BPR']:.3f} "
                      f"({100 * (means['MetaMMF_MF'] / means['BPR'] - 1):+.1f} %)."]
    return lines + [""]


def report() -> str:
    lines = ["# Planted data: the carrier modality varies per item", "",
             "Data from `benchmarks/planted_dynamic.py`'s `generate` (seed 0; three dense modalities, 40 taste",
             "clusters, the carrier modality drawn per item); every model with its default YAML under the",
             "plugin's protocol (per-user random 8:1:1, full ranking, early stopping on validation NDCG@10).", ""]
    for name in VARIANTS:
        lines += _variant_lines(name)
    text = "\n".join(lines)
    with open(TABLE, "w") as f:
        f.write(text)
    return text


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--report", action="store_true", help="only rewrite the table")
    p.add_argument("--generate", metavar="DIR", help="only write the planted dataset into DIR")
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--variant", choices=list(VARIANTS), default=NAME, help="which planted dataset")
    args = p.parse_args(argv)
    if args.generate:
        generate(args.generate, name=args.variant, **VARIANTS[args.variant])
        return
    if not args.report:
        run(args.models, args.seeds, args.variant)
    print(report())


if __name__ == "__main__":
    main()
