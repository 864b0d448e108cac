"""Benchmark the converters and RecBole's loading at the full dataset shapes.

For each shape (TikTok: 36,656 users, 76,085 items, 726,065 interactions,
128/128/word-pair features; Kwai: 7,010 x 86,483, 298,492 interactions, 2048-d
visual) it generates the full MMGCN layout, then measures, each in a fresh
process so the peak RSS is that step's own:

1. ``python -m dataset_converters <kind>``: wall time and peak RSS;
2. RecBole's first ``create_dataset`` (plain ``BPR`` config with the dataset's
   YAML, ``save_dataset: True``);
3. the cached reload of the dataset saved by step 2.

Usage::

    python benchmarks/bench_convert.py [--kinds tiktok,kwai] [--scale 1.0]
        [--work /tmp/bench_convert] [--out benchmarks/convert_results.md]
"""

import argparse
import os
import platform
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGETS = {"tiktok": "< 60 s and < 4 GB", "kwai": "< 24 GB"}

_RECBOLE_LOAD = textwrap.dedent("""
    import sys, time
    from recbole.config import Config
    from recbole.data import create_dataset
    name, data_path, ckpt = sys.argv[1:4]
    config = Config(model="BPR", dataset=name,
                    config_file_list=[f"{data_path}/{name}/{name}.yaml"],
                    config_dict={"data_path": data_path, "save_dataset": True,
                                 "checkpoint_dir": ckpt, "show_progress": False})
    t = time.perf_counter()
    ds = create_dataset(config)
    print(f"{time.perf_counter() - t:.3f} {ds.user_num - 1} {ds.item_num - 1} {ds.inter_num}")
""")


def run_measured(cmd, cwd=REPO):
    """Run ``cmd``; return (wall seconds, peak RSS in GB, stdout)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed with status {proc.returncode}")
    return wall, usage.ru_maxrss / 1024 ** 2, out  # ru_maxrss is in KB on Linux


def bench_kind(kind, scale, work):
    """All measurements for one dataset shape; returns a dict of figures."""
    py = sys.executable
    raw, data, ckpt = work / f"raw-{kind}", work / "data", work / f"saved-{kind}"
    name = f"bench-{kind}"
    for p in (raw, data / name, ckpt):
        shutil.rmtree(p, ignore_errors=True)
    gen = run_measured([py, "-m", "dataset_converters", "synthetic", "--like", kind,
                        "--scale", str(scale), "--out", str(raw)])
    conv = run_measured([py, "-m", "dataset_converters", kind, "--src", str(raw),
                         "--out", str(data), "--name", name])
    size = sum(f.stat().st_size for f in (data / name).iterdir()) / 1024 ** 3
    loads = []
    for _ in range(2):  # first load (saves the dataset), then the cached reload
        wall, rss, out = run_measured([py, "-c", _RECBOLE_LOAD, name, str(data), str(ckpt)])
        loads.append((float(out.split()[0]), wall, rss))
    return {"kind": kind, "gen": gen, "conv": conv, "size": size, "loads": loads,
            "report": conv[2].strip()}


def markdown(results, command):
    """The results file text."""
    lines = ["# Converter benchmark", "",
             f"Command: `{command}`", "",
             f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
             f"Python {platform.python_version()}, load average at the end "
             f"{os.getloadavg()[0]:.1f} (other jobs shared the CPUs); each step in its own "
             "process (peak RSS = that process's maximum resident set).", "",
             "| shape | step | wall time (s) | peak RSS (GB) | target |",
             "|---|---|---|---|---|"]
    for r in results:
        k = r["kind"]
        gen_s, gen_gb, _ = r["gen"]
        lines.append(f"| {k} | generate raw MMGCN layout | {gen_s:.1f} | {gen_gb:.2f} | |")
        lines.append(f"| {k} | convert (`python -m dataset_converters {k}`) | {r['conv'][0]:.1f} "
                     f"| {r['conv'][1]:.2f} | {TARGETS.get(k, '')} |")
        (t1, w1, m1), (t2, w2, m2) = r["loads"]
        lines.append(f"| {k} | RecBole first `create_dataset` (process total) | {t1:.1f} "
                     f"({w1:.1f}) | {m1:.2f} | |")
        lines.append(f"| {k} | RecBole cached reload (process total) | {t2:.1f} ({w2:.1f}) "
                     f"| {m2:.2f} | |")
    lines.append("")
    for r in results:
        lines += [f"Atomic files of {r['kind']}: {r['size']:.2f} GB. Converter output:", "",
                  "```", r["report"], "```", ""]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default="tiktok,kwai")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--work", default="/tmp/bench_convert")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "convert_results.md"))
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    results = []
    for kind in args.kinds.split(","):
        results.append(bench_kind(kind, args.scale, work))
        print(markdown(results[-1:], ""), flush=True)
    command = "python benchmarks/bench_convert.py " + " ".join(sys.argv[1:])
    Path(args.out).write_text(markdown(results, command.strip()), encoding="utf-8")


if __name__ == "__main__":
    main()
