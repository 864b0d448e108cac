"""Benchmarks: models x datasets x seeds as Ray tasks, one result file per trial, leaderboards.

One pipeline, top to bottom (each module imports only modules below it; ``lint-imports`` checks it):

* :mod:`.spec`          what to run (CLI arguments or a benchmark YAML file)
* :mod:`.plan`          which trials: :class:`~.plan.PlainPlan`, or tuned mode's planner :mod:`.tune` (search
                        trials, then the chosen configurations' final trials); ``run_benchmark`` / ``run_tuned``
* :mod:`.runner`        the one Ray runner loop: resume, fingerprints at submission, Ctrl-C, manifest
* :mod:`.tuned_report`, :mod:`.report`, :mod:`.plots`, :mod:`.published`   leaderboards from the trial files
* :mod:`.fingerprint`   a trial's identity (id, file) and fingerprint
* :mod:`.store`         atomic trial files and the run's manifest
* :mod:`.trial`         one trial through RecBole's pipeline -> a JSON-safe record (runs in a Ray worker)

Beside it, :mod:`.hyper` (``run_hyper.py``'s search: RecBole HyperTuning or Ray Tune + ASHA) and
:mod:`.space` (the ``.hyper`` search-space format both searches read).
"""

from recbole_metammf.benchmark.plan import run_benchmark, run_tuned
from recbole_metammf.benchmark.report import summarise, write_report
from recbole_metammf.benchmark.spec import BenchmarkSpec, Trial, load_spec
from recbole_metammf.benchmark.store import load_trials
from recbole_metammf.benchmark.trial import run_trial

__all__ = ["BenchmarkSpec", "Trial", "load_spec", "run_trial", "load_trials", "summarise", "write_report",
           "run_benchmark", "run_tuned"]
