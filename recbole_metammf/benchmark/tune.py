"""Tuned mode: every row searched on validation under the same budget, then its chosen config over the seeds.

For each (row, dataset) of a benchmark whose spec has a ``tune`` section:

1. **Sample.** ``configs`` points of the row's search space (``tune.spaces``, else ``hyper/<row>.hyper``,
   else ``hyper/<model>.hyper``), drawn by a generator seeded with ``tune.seed`` and the row's name, so a
   rerun samples the same ones. A space of ``choice`` parameters with exactly ``configs`` points is taken
   whole (a grid); a space with fewer points than ``configs`` is refused, so that every row gets the same
   number of configurations.
2. **Search** with one seed (``tune.seed``, by default the benchmark's first seed), successive halving
   over that fixed sample (deterministic, ASHA-style): rung ``r`` trains the surviving configurations for
   ``rungs[r]`` epochs (each from scratch; same seed, so a rung's run is the start of the next one's), and
   the best ``ceil(n / eta)`` of them on their best validation score go on; the survivors of the last rung
   train until early stopping ends them (at most the config's ``epochs``). With ``rungs: []`` every
   configuration trains to early stopping. The configuration with the best validation score of that
   last stage is chosen (ties: the lower index). The test split plays no part in any of this.
3. **Final.** The chosen configuration with every seed of the benchmark, evaluated on test. The search's
   own last-stage run of the chosen configuration *is* the final trial of its seed when that seed is one of
   the benchmark's (same config, seed, code and data, hence the same fingerprint): it is copied, not rerun.

Every search trial is a file ``search/<dataset>__<row>__cfg<k>__r<rung>.json`` holding its sampled
configuration and its row's search space; final trials are ``trials/<dataset>__<row>__seed<s>.json``, as in
a plain benchmark. The plan is recomputed from these files after every finished trial, so a run killed at
any moment resumes at the granularity of one search trial, and :mod:`.tuned_report` writes the leaderboard
from the files alone. A failed search trial counts as the worst score; the next run retries it only while
nothing has used its rung's outcome yet (no later rung and no final trial of its row exists: e.g. every
trial failed because the data were missing); delete its file to retry it later. A failed final trial is
retried by the next run, as in plain mode.
"""

from __future__ import annotations

import math
import os
import sys
import zlib
from datetime import datetime, timezone

import numpy as np

from recbole_metammf.benchmark import store
from recbole_metammf.benchmark.fingerprint import Trial
from recbole_metammf.benchmark.runner import Action, ChangedTrialError, ensure_datasets
from recbole_metammf.benchmark.space import _plain, parse_space
from recbole_metammf.benchmark.store import SEARCH
from recbole_metammf.benchmark.store import TUNE_DEFAULTS as DEFAULTS
from recbole_metammf.errors import ConfigError  # a ValueError too; the entry points print it as one line

HYPER_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "hyper")


# --- settings and search spaces -------------------------------------------------------------------
def check_tune_settings(raw, here: str | None = None, source: str = "tune") -> dict:
    """The ``tune`` section with its defaults filled in, or a ValueError naming what is wrong.

    ``spaces`` values are ``.hyper`` files (relative to ``here``) or inline mappings
    ``{param: [choices] | "uniform a b" | "loguniform a b" | "quniform a b q"}``.
    """
    raw = {} if raw is True else dict(raw or {})
    unknown = set(raw) - set(DEFAULTS)
    if unknown:
        raise ConfigError(f"{source}: unknown keys in 'tune': {sorted(unknown)} (known: {sorted(DEFAULTS)})")
    out = {**DEFAULTS, **raw}
    if not isinstance(out["configs"], int) or out["configs"] < 1:
        raise ConfigError(f"{source}: tune.configs must be a positive integer")
    rungs = out["rungs"] or []
    if (not isinstance(rungs, list) or not all(isinstance(r, int) and r > 0 for r in rungs)
            or rungs != sorted(set(rungs))):
        raise ConfigError(f"{source}: tune.rungs must be increasing positive epoch budgets, e.g. [10, 30]")
    out["rungs"] = rungs
    if not isinstance(out["eta"], int) or out["eta"] < 2:
        raise ConfigError(f"{source}: tune.eta (the halving factor) must be an integer >= 2")
    share = out["max_last_epoch_share"]
    if share is not None and not (isinstance(share, (int, float)) and 0 <= share <= 1):
        raise ConfigError(f"{source}: tune.max_last_epoch_share must be a share in [0, 1] or null (no rule)")
    spaces = {}
    for row, value in (out["spaces"] or {}).items():
        if isinstance(value, str):
            spaces[row] = value if os.path.isabs(value) or here is None else os.path.join(here, value)
        elif isinstance(value, dict):
            spaces[row] = {k: v for k, v in value.items()}
            inline_space(spaces[row], f"{source}: tune.spaces.{row}")  # checks it
        else:
            raise ConfigError(f"{source}: tune.spaces.{row} must be a .hyper file or a mapping of parameters")
    out["spaces"] = spaces
    return out


def inline_space(mapping: dict, where: str = "space") -> dict:
    """``{name: (kind, args)}`` from an inline space: a list is a ``choice``, a string a distribution."""
    space = {}
    for name, value in mapping.items():
        if isinstance(value, list):
            if not value:
                raise ConfigError(f"{where}: {name} has no choices")
            space[name] = ("choice", value)
            continue
        parts = str(value).split()
        if not parts or parts[0] not in ("uniform", "loguniform", "quniform"):
            raise ConfigError(f"{where}: {name} must be a list of choices or 'uniform|loguniform|quniform ...'")
        space[name] = (parts[0], [float(x) for x in parts[1:]])
    return space


def row_space(spec, row: str) -> tuple[dict, str]:
    """(space, where it came from) of a row: ``tune.spaces``, ``hyper/<row>.hyper``, ``hyper/<model>.hyper``."""
    given = (spec.tune.get("spaces") or {}).get(row)
    if isinstance(given, dict):
        return inline_space(given, f"tune.spaces.{row}"), "the benchmark file"
    candidates = [given] if given else [os.path.join(HYPER_DIR, f"{row}.hyper"),
                                        os.path.join(HYPER_DIR, f"{spec.model_of(row)}.hyper")]
    for path in candidates:
        if os.path.isfile(path):
            rel = os.path.relpath(path, os.path.dirname(HYPER_DIR))
            return parse_space(path), rel if not rel.startswith("..") else path
    raise ConfigError(f"no search space for {row}: give tune.spaces.{row}, or write {candidates[-1]}")


def describe_space(space: dict) -> str:
    """One line: ``learning_rate in {0.0005, 0.001}; reg_weight ~ loguniform(e^-9, e^-4)``."""
    out = []
    for name, (kind, args) in space.items():
        if kind == "choice":
            out.append(f"{name} in {{{', '.join(_short(v) for v in args)}}}")
        elif kind == "loguniform":
            out.append(f"{name} ~ loguniform({math.exp(args[0]):.3g}, {math.exp(args[1]):.3g})")
        else:
            out.append(f"{name} ~ {kind}({', '.join(_short(a) for a in args)})")
    return "; ".join(out)


def _short(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def space_size(space: dict) -> float:
    """Points of a choice-only space (inf when a parameter is a distribution)."""
    if any(kind != "choice" for kind, _ in space.values()):
        return math.inf
    return math.prod(len(args) for _, args in space.values())


def sample_configs(space: dict, n: int, seed: int, row: str) -> list[dict]:
    """``n`` distinct configurations of ``space``, the same for the same (seed, row) on every run.

    A choice-only space of exactly ``n`` points is returned whole, in grid order. Otherwise the sample
    is a Latin hypercube: each parameter's range is cut into ``n`` strata, one point drawn in each, and
    the strata paired at random across parameters, so that 8 points cover each parameter evenly (a
    choice of 4 learning rates gets each twice) rather than by luck. ``loguniform`` bounds are in log
    space (RecBole's ``.hyper`` format); drawn numbers are rounded to 4 significant digits.
    """
    names = list(space)
    size = space_size(space)
    if size < n:
        raise ConfigError(f"the search space of {row} has {int(size)} point(s), fewer than the {n} configurations "
                         "every row gets: widen it or lower tune.configs")
    if size == n:
        out = [{}]
        for name in names:
            out = [{**c, name: _plain(v)} for c in out for v in space[name][1]]
        return out
    rng = np.random.default_rng([int(seed), zlib.crc32(row.encode())])
    for _ in range(1000):
        strata = {name: (rng.permutation(n) + rng.uniform(size=n)) / n for name in names}
        out = [{name: _value(space[name], float(strata[name][i])) for name in names} for i in range(n)]
        if all(c not in out[:i] for i, c in enumerate(out)):
            return out
    raise ConfigError(f"could not draw {n} distinct configurations of {row}'s search space")


def _value(dist, u: float):
    """The point of a distribution at quantile ``u`` in [0, 1)."""
    kind, args = dist
    if kind == "choice":
        return _plain(args[min(int(u * len(args)), len(args) - 1)])
    x = args[0] + u * (args[1] - args[0])
    if kind == "loguniform":
        x = math.exp(x)
    elif kind == "quniform":
        x = round(x / args[2]) * args[2]
    return float(f"{x:.4g}")


# --- the plan: what is finished, what runs next -----------------------------------------------------
def score_of(record) -> float | None:
    """A search trial's best validation score; None for a failed trial (or a NaN score)."""
    if not record or record.get("status") != "ok":
        return None
    s = record.get("best_valid_score")
    return None if s is None or (isinstance(s, float) and math.isnan(s)) else float(s)


def rank(candidates, scores: dict, bigger: bool = True) -> list[int]:
    """Config indices with a score, best first (ties: the lower index); failed ones left out."""
    ok = [k for k in candidates if scores.get(k) is not None]
    return sorted(ok, key=lambda k: ((-scores[k]) if bigger else scores[k], k))


def promote(alive, scores: dict, eta: int, bigger: bool = True) -> list[int]:
    """The best ``ceil(len(alive) / eta)`` configurations of a rung (at least one), in index order."""
    return sorted(rank(alive, scores, bigger)[:kept(len(alive), eta)])


def kept(n: int, eta: int) -> int:
    """How many of a rung's ``n`` configurations go on: ``ceil(n / eta)``, at least one."""
    return max(1, math.ceil(n / eta))


class TunedPlan:
    """The state of a tuned benchmark, recomputed from its files: :meth:`step` says what runs next
    (a planner of :func:`.runner.run`)."""

    def __init__(self, spec, out_dir: str, force: bool = False, retry_failed: bool = True):
        self.spec, self.out_dir, self.force, self.retry_failed = spec, out_dir, force, retry_failed
        self.tune = check_tune_settings(spec.tune)
        self.seed = int(self.tune["seed"] if self.tune["seed"] is not None else spec.seeds[0])
        self.attempted: set = set()       # trial ids run by this process: never submitted twice
        self.done: set = set()            # (sub, id) found finished by a step
        self.stale: dict = {}             # (sub, id) -> why it no longer matches
        self._records: dict = {}
        self.left = 0                     # trials the last step foresaw to run (the progress bar's total)
        self.spaces = {row: row_space(spec, row) for row in spec.models}
        self.samples = {row: sample_configs(self.spaces[row][0], self.tune["configs"], self.seed, row)
                        for row in spec.models}

    # files ---------------------------------------------------------------------------------------
    def record(self, sub: str, trial_id: str):
        key = (sub, trial_id)
        if key not in self._records:
            self._records[key] = store.load_trial(self.out_dir, trial_id, sub, set_aside_damaged=True)
        return self._records[key]

    def put(self, sub: str, record: dict) -> None:
        store.save_trial(self.out_dir, record, sub)
        self._records[(sub, record["trial_id"])] = record

    def _state(self, sub: str, trial: Trial, record) -> str:
        """'missing' (to run), 'stale' (changed, refused), 'done' (finished, ok or failed)."""
        if record is None:
            return "missing"
        reason = trial.stale_reason(record)
        if reason:  # also for a file this run wrote: code or data edited meanwhile stops the row
            if self.force and trial.id not in self.attempted:
                return "missing"
            self.stale[(sub, trial.id)] = reason
            return "stale"
        if record.get("status") != "ok" and self.retry_failed and trial.id not in self.attempted:
            # a failed final trial runs again; a failed search trial only while its rung's outcome is unused
            if sub != SEARCH or not self._advanced(trial.dataset, trial.row, int(trial.tag.rsplit("__r", 1)[1])):
                return "missing"
        self.done.add((sub, trial.id))
        return "done"

    def _advanced(self, dataset: str, row: str, rung: int) -> bool:
        """Whether the search of (dataset, row) went past ``rung``: a later rung's or a final trial's file exists."""
        prefix = f"{dataset}__{row}__"
        for sub in (SEARCH, store.TRIALS):
            directory = os.path.join(self.out_dir, sub)
            for name in os.listdir(directory) if os.path.isdir(directory) else []:
                if not name.startswith(prefix) or not name.endswith(".json"):
                    continue
                tag = name[len(prefix):-5]
                if sub == store.TRIALS or ("__r" in tag and tag.rsplit("__r", 1)[1].isdigit()
                                           and int(tag.rsplit("__r", 1)[1]) > rung):
                    return True
        return False

    # the plan ------------------------------------------------------------------------------------
    def step(self) -> list[Action]:
        """Every action that can start now (search trials of the current rung, final trials, copies)."""
        actions, self.left = [], 0
        for di, dataset in enumerate(self.spec.datasets):
            settings = self.spec.settings(dataset)
            for ri, row in enumerate(self.spec.models):
                actions += self._row(dataset, row, settings[row], (di, ri))
        return sorted(actions, key=lambda a: a.priority)

    def _search_trial(self, row, model, dataset, files, config, k, r) -> Trial:
        cfg = {**config, **self.samples[row][k]}
        if r < len(self.tune["rungs"]):  # a rung never trains longer than the cap the benchmark sets
            cap = cfg.get("epochs")
            cfg["epochs"] = min(self.tune["rungs"][r], int(cap)) if isinstance(cap, (int, float)) else self.tune["rungs"][r]
        return Trial(model, dataset, self.seed, files, cfg, name=row if row != model else "", tag=f"cfg{k}__r{r}")

    def _row(self, dataset, row, setting, order) -> list[Action]:
        model, files, config = setting
        rungs, configs = self.tune["rungs"], self.samples[row]
        space, where = self.spaces[row]
        common = {"row": row, "search_seed": self.seed, "space": describe_space(space), "space_source": where,
                  "configs_sampled": len(configs)}
        alive = list(range(len(configs)))
        scores: dict = {}
        bigger = True
        for r in range(len(rungs) + 1):
            actions, blocked, stale, scores = [], False, False, {}
            for k in alive:
                trial = self._search_trial(row, model, dataset, files, config, k, r)
                record = self.record(SEARCH, trial.id)
                state = self._state(SEARCH, trial, record)
                if state == "missing":
                    meta = {**common, "stage": "search", "config_index": k, "rung": r,
                            "epoch_budget": rungs[r] if r < len(rungs) else None, "params": configs[k]}
                    actions.append(Action("run", trial, SEARCH, meta, (*order, r, k)))
                stale = stale or state == "stale"
                if state != "done":
                    blocked = True
                    continue
                scores[k] = score_of(record)
                if record.get("status") == "ok":
                    bigger = bool(record.get("config", {}).get("valid_metric_bigger", True))
            if stale:
                return []  # nothing more of this row runs beside a trial of other code, data or config
            if blocked:
                self.left += len(actions) + self._trials_after(len(alive), r)
                return actions
            if r < len(rungs):
                alive = promote(alive, scores, self.tune["eta"], bigger)
        ranked = rank(alive, scores, bigger)
        if not ranked:
            return []  # every configuration failed: the row has no final trials (the report says so)
        chosen = ranked[0]
        params = configs[chosen]
        source_trial = self._search_trial(row, model, dataset, files, config, chosen, len(rungs))
        meta = {**common, "stage": "final", "tuned_params": params, "chosen_config_index": chosen,
                "chosen_from": source_trial.id}
        actions, stale = [], False
        for seed in self.spec.seeds:
            trial = Trial(model, dataset, int(seed), files, {**config, **params}, name=row if row != model else "")
            state = self._state("trials", trial, self.record("trials", trial.id))
            stale = stale or state == "stale"
            if state != "missing":
                continue
            source = self.record(SEARCH, source_trial.id)
            if int(seed) == self.seed and source and source.get("status") == "ok" and trial.matches(source.get("fingerprint")):
                actions.append(Action("reuse", trial, "trials", {**meta, "reused_from": source_trial.id},
                                      (*order, len(rungs) + 1, int(seed)), source=source))
            else:
                actions.append(Action("run", trial, "trials", meta, (*order, len(rungs) + 1, int(seed))))
        if stale:
            return []
        self.left += sum(a.kind == "run" for a in actions)
        return actions

    def _trials_after(self, alive: int, rung: int) -> int:
        """Trials a row still runs after its rung ``rung`` of ``alive`` configurations when none fails: the
        later rungs' (each keeps :func:`kept` of the one before) and its final seeds (the search seed's is copied)."""
        n, total = alive, 0
        for _ in range(rung, len(self.tune["rungs"])):
            n = kept(n, self.tune["eta"])
            total += n
        return total + len(self.spec.seeds) - (self.seed in self.spec.seeds)

    # as a planner of the runner ----------------------------------------------------------------------
    def start(self) -> list[Action]:
        ensure_datasets(self.spec.trials())  # before any fingerprint: the data digest reads the dataset's files
        self.existing = {(sub, tid) for sub in (SEARCH, store.TRIALS) for tid in store.trial_ids(self.out_dir, sub)}
        actions = self.step()
        if self.stale:
            raise ChangedTrialError(self.stale_message())
        return actions

    def manifest(self, previous: dict, command, cpus_per_trial: int) -> dict:
        runs = previous.get("runs", [])
        runs.append({"command": command, "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "found": len(self.existing)})
        return {"mode": "tuned", "command": command or previous.get("command"),
                "spec": store.merged_spec(previous, self.spec.to_dict()),
                "tune": {**self.tune, "seed": self.seed}, "cpus_per_trial": cpus_per_trial, "runs": runs}

    def resume_message(self):
        return f"{len(self.existing)} trial file(s) in {self.out_dir} found; resuming." if self.existing else None

    def new_summary(self) -> dict:
        return {"ran": [], "skipped": [], "reused": [], "failed": []}

    @property
    def progress(self):
        # what the last step planned (before the run loop: the first, after any copies): each row's missing
        # trials of its current stage and every later one
        return self.left, "tuned trials", True

    def finish(self, action: Action, record: dict, fingerprint: str, parts: dict, cpus_per_trial: int) -> dict:
        """A worker's trial record as the tuned run stores it: its own id, fingerprint, row and stage."""
        record = dict(record)
        record.update({"trial_id": action.trial.id, "fingerprint": fingerprint, "fingerprint_parts": parts,
                       "cpus_per_trial": cpus_per_trial, **action.meta})
        return record

    def copy(self, action: Action) -> dict:
        record = {k: v for k, v in action.source.items()
                  if k not in ("config_index", "rung", "epoch_budget", "params", "trial_id")}
        record.update({"trial_id": action.trial.id, **action.meta})
        return record

    def close(self, summary: dict) -> None:
        summary["skipped"] = sorted(tid for sub, tid in self.done & self.existing)
        if self.stale:  # code or data edited while this run went on: those rows stopped advancing
            print("Stopped advancing: " + self.stale_message(), file=sys.stderr)
            summary["stale"] = sorted(tid for _, tid in self.stale)

    def stale_message(self) -> str:
        items = ", ".join(f"{sub}/{tid} ({why})" for (sub, tid), why in sorted(self.stale.items()))
        return (f"{self.out_dir} holds trials that no longer match this benchmark: {items}. A resumed run never "
                "mixes them with new ones: use another --out, or --force to run them again and replace their files")
