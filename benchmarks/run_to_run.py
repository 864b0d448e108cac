"""Do two runs of the same model, data and seed give the same validation curve, and what moves it?

MMGCN's same-seed runs in the reference check parted between sessions (ours, seed 2020, 3 layers: test
Recall@20 .0729 one day, .0653 the next) while LightGCN's and BM3's repeated to the last digit. This script
trains each model for a few epochs on the converted TikTok subset with the reference check's settings (seed
2020, the literature's test mask, one thread), each run in its own process, under:

* ``native``: torch's CPU kernels as it chooses them on this machine, twice (does a run repeat itself in
  one session, on one machine?);
* ``hashseed``: ``PYTHONHASHSEED`` set to another value (does Python's per-process string hashing reach
  the computation, e.g. through a set or dict order?);
* ``default-kernels``: ``ATEN_CPU_CAPABILITY=default``, torch's unvectorised kernels (what a CPU with other
  vector instructions would round differently).

``--repo DIR`` runs another checkout's code (a ``git worktree`` of an earlier commit, with the same ``dataset``)
under the same runs, to tell a change in the code from one in the machine. It writes each run's validation
curve, the commit it ran and the first epoch where it parts from the model's first native run of this
checkout (``run_to_run.md`` and ``run_to_run/*.json``; the machine's CPU is named in each).

    python -m dataset_converters diffmm --src ../shared/data/tiktok-diffmm --out dataset --name tiktok-diffmm
    python benchmarks/run_to_run.py --models MMGCN LightGCN DRAGON --epochs 5
    git worktree add --detach ../old b60d2cc && python benchmarks/run_to_run.py --models MMGCN --repo ../old --runs native
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from refcheck.page import machine_label  # the per-seed table's label of a record's machine (benchmarks/refcheck/)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OUT = HERE / "run_to_run"
PAGE = HERE / "run_to_run.md"

# (name, environment changes) for each run of a model; the first is the one the others are compared with
RUNS = [
    ("native", {}),
    ("native (again)", {}),
    ("hashseed", {"PYTHONHASHSEED": "12345"}),
    ("default-kernels", {"ATEN_CPU_CAPABILITY": "default"}),
]

CHILD = """
import json, sys
sys.path.insert(0, {repo!r})
from recbole_metammf.benchmark.trial import run_trial
import torch
r = run_trial({model!r}, "tiktok-diffmm", {seed}, config_dict={config!r})
r["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
print("RESULT " + json.dumps({{k: r.get(k) for k in ("status", "error", "valid_curve", "train_loss", "machine",
                                                  "cpu_capability", "epochs_run")}}))
"""


def commit_of(repo: Path) -> str:
    out = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short=7", "HEAD"], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{repo}: not a git checkout ({out.stderr.strip()})")
    dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no", "--",
                            "recbole_metammf", "properties"], capture_output=True, text=True).stdout.strip()
    return out.stdout.strip() + ("+changes" if dirty else "")


def run_one(repo: Path, model: str, seed: int, epochs: int, data_path: str, env_changes: dict, workdir: Path) -> dict:
    config = {"data_path": data_path, "test_mask": "train", "epochs": epochs, "stopping_step": epochs,
              "show_progress": False}
    env = {**os.environ, "OMP_NUM_THREADS": "1", **env_changes}
    env.pop("PYTHONPATH", None)
    for key in ("PYTHONHASHSEED", "ATEN_CPU_CAPABILITY"):
        if key not in env_changes:
            env.pop(key, None)
    code = CHILD.format(repo=str(repo), model=model, seed=seed, config=config)
    out = subprocess.run([sys.executable, "-c", code], cwd=workdir, env=env, capture_output=True, text=True)
    line = next((x for x in reversed(out.stdout.splitlines()) if x.startswith("RESULT ")), None)
    if out.returncode != 0 or line is None:
        raise SystemExit(f"{model} run failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    result = json.loads(line[len("RESULT "):])
    if result["status"] != "ok":
        raise SystemExit(f"{model} run failed: {result['error']}")
    if not result.get("machine"):  # an older checkout's trial does not record it: the same machine, this code's reading
        if str(REPO) not in sys.path:
            sys.path.insert(0, str(REPO))
        from recbole_metammf.benchmark.trial import machine

        result["machine"] = {**machine(), "cpu_capability": result["cpu_capability"]}
    return result


def first_parting(a: list, b: list) -> int | None:
    """The first epoch whose validation score differs between two curves (None: identical)."""
    for (ea, sa), (eb, sb) in zip(a, b):
        if sa != sb:
            return ea
    return None


def write_page(records: list[dict]) -> None:
    lines = ["# Run to run: the same model, data and seed, each run in its own process", "",
             "Written by `benchmarks/run_to_run.py` (its docstring says why and how). TikTok subset, seed "
             f"{', '.join(str(x) for x in sorted({r['seed'] for r in records}))}, "
             "the reference check's settings, one thread, validation Recall@20 after each epoch. *parts at*: the "
             "first epoch whose validation Recall@20 differs from the model's first native run (— : the same "
             "curve to the last digit).", "",
             "| model | code | run | environment | machine | validation Recall@20 by epoch | parts at |",
             "|---|---|---|---|---|---|---|"]
    for r in records:
        curve = " ".join(f"{s:.4f}" for _, s in r["valid_curve"])
        env = ", ".join(f"`{k}={v}`" for k, v in r["env"].items()) or "—"
        parts = "—" if r["parts_at"] is None else str(r["parts_at"])
        lines.append(f"| {r['model']} | {r['commit']} | {r['run']} | {env} | {machine_label(r['machine'])} | {curve} | {parts} |")
    earlier = []
    for model in sorted({r["model"] for r in records}):
        first = next(r for r in records if r["model"] == model)
        path = HERE / "reference_check" / f"{model}__ours__seed{first['seed']}.json"
        if path.exists():  # the same model, seed and settings, trained to the end by the reference check earlier
            old = json.loads(path.read_text())
            curve = old["valid_curve"][:first["epochs"]]
            parts = first_parting(first["valid_curve"], curve)
            earlier.append(f"| {model} | {old.get('finished_at', '?')[:10]} | {machine_label(old.get('machine'))} | "
                           f"{' '.join(f'{s:.4f}' for _, s in curve)} | {'—' if parts is None else parts} |")
    if earlier:
        lines += ["", "The same model, seed and settings in the reference check's run (`reference_check/MODEL__ours__"
                  "seedSEED.json`, trained to its early stop on an earlier day; its first epochs), against the first "
                  "native run above:", "", "| model | finished | machine | validation Recall@20 by epoch | parts at |",
                  "|---|---|---|---|---|"] + earlier
    lines += ["", "Commands: " + "; ".join(f"`{c}`" for c in sorted({r["command"] for r in records})), ""]
    PAGE.write_text("\n".join(lines))


def _first_native(model: str, seed: int, epochs: int) -> dict | None:
    """This checkout's first native run of ``model`` (what every run is compared with), if it has run."""
    path = OUT / f"{model}__native.json"
    if path.exists():
        r = json.loads(path.read_text())
        if r["seed"] == seed and r["epochs"] == epochs:
            return r
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", nargs="+", default=["MMGCN", "LightGCN", "DRAGON"])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=2020)
    ap.add_argument("--data-path", default=str(REPO / "dataset"))
    ap.add_argument("--repo", default=str(REPO), help="the checkout whose code runs (default: this one)")
    ap.add_argument("--runs", nargs="+", default=[name for name, _ in RUNS], choices=[name for name, _ in RUNS])
    ap.add_argument("--report", action="store_true", help="rewrite the page from run_to_run/*.json only")
    args = ap.parse_args()
    OUT.mkdir(exist_ok=True)
    if not args.report:
        import tempfile

        if not (Path(args.data_path) / "tiktok-diffmm").is_dir():
            raise SystemExit(f"{args.data_path}/tiktok-diffmm not found: convert it first (see this script's docstring)")
        repo = Path(args.repo).resolve()
        commit = commit_of(repo)
        command = (f"python benchmarks/run_to_run.py --models {' '.join(args.models)} --epochs {args.epochs} "
                   f"--seed {args.seed}")
        if repo != REPO:
            command += f" --repo CHECKOUT-OF-{commit} --runs {' '.join(args.runs)}"

        with tempfile.TemporaryDirectory(prefix="run-to-run-") as work:  # RecBole's log/ and saved/ go there
            for model in args.models:
                first = _first_native(model, args.seed, args.epochs)
                for name, env_changes in RUNS:
                    if name not in args.runs:
                        continue
                    tag = name.replace(' ', '').replace('(', '-').replace(')', '')
                    path = OUT / (f"{model}__{tag}.json" if repo == REPO else f"{model}__{commit}__{tag}.json")
                    print(f"{model} {name} ...", flush=True)
                    r = run_one(repo, model, args.seed, args.epochs, args.data_path, env_changes, Path(work))
                    record = {"model": model, "commit": commit, "run": name, "env": env_changes, "seed": args.seed,
                              "epochs": args.epochs, "valid_curve": [[p["epoch"], p["score"]] for p in r["valid_curve"]],
                              "train_loss": r["train_loss"], "machine": r["machine"],
                              "parts_at": None, "command": command,
                              "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
                    first = first or record
                    record["parts_at"] = first_parting(first["valid_curve"], record["valid_curve"])
                    path.write_text(json.dumps(record, indent=1) + "\n")
                    print(f"  {' '.join(f'{s:.4f}' for _, s in record['valid_curve'])}  parts at {record['parts_at']}",
                          flush=True)
    order = {name: i for i, (name, _) in enumerate(RUNS)}
    records = [json.loads(p.read_text()) for p in OUT.glob("*.json")]
    records.sort(key=lambda r: (r["model"], r["finished_at"], order.get(r["run"], 99)))
    write_page(records)
    print(f"wrote {PAGE}")


if __name__ == "__main__":
    main()
