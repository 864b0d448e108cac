"""Benchmarks: models x datasets x seeds as Ray tasks, one result file per trial, leaderboards.

* :mod:`.spec`        what to run (CLI arguments or a benchmark YAML file)
* :mod:`.trial`       one trial through RecBole's pipeline -> a JSON-safe record
* :mod:`.store`       atomic trial files and the run's manifest
* :mod:`.ray_runner`  local or cluster Ray, resume, progress bar
* :mod:`.report`      leaderboard.md / leaderboard.csv per dataset; :mod:`.plots` the PNGs
* :mod:`.hyper`       hyper-parameter search (RecBole HyperTuning or Ray Tune + ASHA)
"""

from recbole_metammf.benchmark.report import summarise, write_report
from recbole_metammf.benchmark.spec import BenchmarkSpec, Trial, load_spec
from recbole_metammf.benchmark.store import load_trials
from recbole_metammf.benchmark.trial import run_trial

__all__ = ["BenchmarkSpec", "Trial", "load_spec", "run_trial", "load_trials", "summarise", "write_report",
           "run_benchmark"]


def run_benchmark(*args, **kwargs):
    """See :func:`recbole_metammf.benchmark.ray_runner.run_benchmark` (imports Ray only when called)."""
    from recbole_metammf.benchmark.ray_runner import run_benchmark as _run

    return _run(*args, **kwargs)
