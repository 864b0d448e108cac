"""torch.profiler over a few training steps of any case of bench_scale.py (issue 12's step profiles).

Builds the case as ``bench_scale.py`` does, runs two warm-up steps, then profiles ``--steps``
steps and prints the operators by self CPU time with their call counts per step. On a shared
machine the times are only shares; the call counts (how many sparse products a step makes, say)
do not depend on the load.

    python benchmarks/profile_step.py mid/GRCN > benchmarks/scale_runs/logs/round3-profile-mid-GRCN.log
"""

from __future__ import annotations

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))


def main(argv=None) -> None:
    import bench_scale

    p = bench_scale.case_arguments(__doc__, steps=3)
    p.add_argument("--rows", type=int, default=25, help="operators listed")
    args = p.parse_args(argv)
    os.makedirs(args.work, exist_ok=True)
    os.chdir(args.work)  # RecBole writes log/ and saved/ under the working directory

    from torch.profiler import ProfilerActivity, profile

    _config, model, trainer, train_data, _info = bench_scale.build(args.case, args.data, args.work, args.threads)
    step, _batches = bench_scale.stepper(model, trainer, train_data)
    for _ in range(2):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(args.steps):
            step()
        wall = (time.perf_counter() - t0) / args.steps
    events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
    print(f"{args.case}: {args.steps} profiled steps, {wall:.3f} s per step under the profiler, "
          f"load average {os.getloadavg()[0]:.1f}, {args.threads} threads")
    print(f"{'operator':50s} {'self ms/step':>12s} {'share':>6s} {'calls/step':>10s}")
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    for e in events[: args.rows]:
        print(f"{e.key[:50]:50s} {e.self_cpu_time_total / 1e3 / args.steps:12.2f} "
              f"{100 * e.self_cpu_time_total / total:5.1f}% {e.count / args.steps:10.1f}")


if __name__ == "__main__":
    main()
