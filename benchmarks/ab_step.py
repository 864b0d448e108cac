"""Median training step of a bench_scale.py case with the plugin package of another checkout.

To tell a code change from the machine's drift between timed rounds: run it alternately for two
checkouts (e.g. a ``git worktree`` of an older commit and this one) in the same minutes, so both
meet the same load:

    git worktree add /tmp/old 075a0e6
    for i in 1 2 3; do for repo in /tmp/old .; do
        python benchmarks/ab_step.py mid/MetaMMF_GCN-ref $repo --steps 25; done; done

The case is built by this checkout's ``bench_scale.py`` (the same data and settings); the model code
is ``REPO``'s ``recbole_metammf``.
"""

from __future__ import annotations

import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None) -> None:
    sys.path.insert(0, HERE)
    import bench_scale  # puts this checkout's root first on sys.path: REPO goes before it below

    p = bench_scale.case_arguments(__doc__, steps=25)
    p.add_argument("repo", help="checkout whose recbole_metammf package runs")
    args = p.parse_args(argv)
    repo = os.path.abspath(args.repo)
    sys.path.insert(0, repo)
    import recbole_metammf

    if not os.path.abspath(recbole_metammf.__file__).startswith(repo + os.sep):
        raise SystemExit(f"error: imported {recbole_metammf.__file__}, not the package of {repo}")
    os.makedirs(args.work, exist_ok=True)
    os.chdir(args.work)  # RecBole writes log/ and saved/ under the working directory
    _config, model, trainer, train_data, _info = bench_scale.build(args.case, args.data, args.work, args.threads)
    step, _batches = bench_scale.stepper(model, trainer, train_data)
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    print(f"{repo} {args.case}: median step {statistics.median(times[2:]):.3f} s over steps 3-{args.steps}, "
          f"peak {bench_scale.peak_gb():.2f} GB, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
