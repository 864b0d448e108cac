"""Benchmarks on Ray, resume, failures, the leaderboard's statistics and the hyper-parameter search.

Everything runs on the small planted dataset with 1-2 epochs; Ray runs locally on the
machine's cores (trials in fresh worker processes).
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml
from scipy import stats

from conftest import REPO, planted_config
from recbole_metammf.benchmark import store
from recbole_metammf.benchmark.report import summarise, write_report
from recbole_metammf.benchmark.spec import BenchmarkSpec, load_spec
from recbole_metammf.benchmark.trial import run_trial

ray = pytest.importorskip("ray")

MODELS = ["BPR", "MetaMMF_MF"]


def _data_yaml(root, name, path, **extra):
    """A config file for the planted data (seed comes from the trial)."""
    cfg = planted_config(root, name, **extra)
    cfg.pop("seed")
    cfg.pop("checkpoint_dir")
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


# --- end to end --------------------------------------------------------------------------------
def test_two_models_two_seeds_end_to_end_and_same_seed_same_metrics(planted, tmp_path, local_ray):
    from recbole_metammf.benchmark.plan import run_benchmark

    root, name = planted
    conf = _data_yaml(root, name, tmp_path / "data.yaml", epochs=2)
    spec = BenchmarkSpec(models=MODELS, datasets=[name], seeds=[1, 2], config_files=[conf])
    out = tmp_path / "bench"
    summary = run_benchmark(spec, str(out), progress=False, command="python run_benchmark.py ...")
    assert sorted(summary["ran"]) == sorted(t.id for t in spec.trials()) and not summary["failed"]

    records = store.load_trials(str(out))
    assert len(records) == 4 and all(r["status"] == "ok" for r in records)
    keys = {f"{m}@{k}" for m in ["recall", "ndcg", "precision", "hit", "hr"] for k in (10, 20)}
    for r in records:
        assert set(r["test_result"]) == keys and set(r["best_valid_result"]) == keys
        assert r["config"]["seed"] == r["seed"] and r["config"]["model"] == r["model"]
        assert r["epochs_run"] == 2 and [p["epoch"] for p in r["valid_curve"]] == [0, 1]
        assert r["best_epoch"] in (0, 1)
        assert r["valid_curve"][r["best_epoch"]]["result"] == r["best_valid_result"]
        assert r["train_time_s"] > 0 and r["test_time_s"] > 0 and r["peak_memory_mb"] > 50
        assert r["threads"] == 1  # one core per trial: two trials on two cores, no oversubscription

    for f in ["README.md", f"{name}/leaderboard.md", f"{name}/leaderboard.csv", f"{name}/bars.png",
              f"{name}/valid_curves.png"]:
        assert (out / f).stat().st_size > 0, f
    md = (out / name / "leaderboard.md").read_text()
    assert "python run_benchmark.py ..." in md and "%Improv." in md and "| 300 | 400 | 7200 |" in md

    # same seed, same metrics: the Ray worker's trial again, in this process
    again = run_trial("MetaMMF_MF", name, 1, [conf])
    first = next(r for r in records if r["model"] == "MetaMMF_MF" and r["seed"] == 1)
    other_seed = next(r for r in records if r["model"] == "MetaMMF_MF" and r["seed"] == 2)
    assert again["test_result"] == first["test_result"]
    assert again["valid_curve"] == first["valid_curve"]
    assert other_seed["test_result"] != first["test_result"]


def test_the_progress_bar_names_each_running_trials_last_validated_epoch(planted, tmp_path, local_ray):
    """A trial's task reports every validation to the run's tracker, whose status gives the bar each running
    trial's last epoch and score (a trial of hours shows where it is); an ended trial leaves the status."""
    from recbole_metammf.benchmark.runner import _remote_functions, running_postfix

    root, name = planted
    conf = _data_yaml(root, name, tmp_path / "data.yaml", epochs=3)
    trial = BenchmarkSpec(models=["BPR"], datasets=[name], seeds=[1], config_files=[conf]).trials()[0]
    Tracker, trial_task = _remote_functions(1)

    @ray.remote(num_cpus=0)
    class Calls:  # what the task tells its tracker, in order
        def __init__(self):
            self.calls = []

        def start(self, trial_id, node_id=None, pid=None):
            self.calls.append(("start", trial_id))

        def validated(self, trial_id, epoch, score):
            self.calls.append(("validated", trial_id, epoch, score))

        def end(self, trial_id):
            self.calls.append(("end", trial_id))

        def seen(self):
            return self.calls

    calls = Calls.remote()
    record = ray.get(trial_task.remote(trial, os.getcwd(), 1, calls))
    assert record["status"] == "ok" and len(record["valid_curve"]) == 3
    assert ray.get(calls.seen.remote()) == (  # each validation as it happened, between start and end
        [("start", trial.id)] + [("validated", trial.id, p["epoch"], p["score"]) for p in record["valid_curve"]]
        + [("end", trial.id)])

    tracker = Tracker.remote()
    ray.get(tracker.start.remote("d__A__cfg1__r0"))
    ray.get(tracker.validated.remote("d__A__cfg1__r0", 13, 0.09851))
    ray.get(tracker.validated.remote("gone", 2, 0.5))  # not running: ignored
    assert ray.get(tracker.status.remote())[2] == {"d__A__cfg1__r0": (13, 0.09851)}
    assert running_postfix(ray.get(tracker.status.remote())[2]) == "d__A__cfg1__r0 epoch 13 valid 0.0985"
    ray.get(tracker.end.remote("d__A__cfg1__r0"))
    assert ray.get(tracker.status.remote()) == (0, {}, {})  # ended: not on the bar any more
    latest = {"c": (1, 0.1), "a": (5, 0.2), "b": (0, 0.3)}
    assert running_postfix(latest) == "a epoch 5 valid 0.2000; b epoch 0 valid 0.3000; +1 more"
    assert running_postfix({}) == ""


def test_failing_trial_is_recorded_and_others_finish(planted, tmp_path, local_ray):
    from recbole_metammf.benchmark.plan import run_benchmark

    root, name = planted
    conf = _data_yaml(root, name, tmp_path / "data.yaml", epochs=1)
    spec = BenchmarkSpec(models=["NoSuchModel", "BPR"], datasets=[name], seeds=[1], config_files=[conf])
    out = tmp_path / "bench"
    summary = run_benchmark(spec, str(out), progress=False)
    assert summary["failed"] == [f"{name}__NoSuchModel__seed1"]
    failed = store.load_trial(str(out), f"{name}__NoSuchModel__seed1")
    ok = store.load_trial(str(out), f"{name}__BPR__seed1")
    assert failed["status"] == "failed" and failed["error"] and "Traceback" in failed["traceback"]
    assert ok["status"] == "ok" and "ndcg@10" in ok["test_result"]
    md = (out / name / "leaderboard.md").read_text()
    assert "## Failed trials" in md and "NoSuchModel" in md and "| BPR | 1 |" in md


# --- kill and resume ---------------------------------------------------------------------------
def test_killed_run_resumes_and_runs_every_trial_exactly_once(planted, tmp_path):
    root, name = planted
    conf = _data_yaml(root, name, tmp_path / "data.yaml", epochs=1)
    bench = tmp_path / "bench.yaml"
    bench.write_text(yaml.safe_dump({"models": MODELS, "datasets": [name], "seeds": 2, "base_seed": 7,
                                     "config_files": [conf]}))
    out = tmp_path / "results" / "bench"
    # two cores per trial: one trial at a time, so the first file appears while the others are unfinished
    cmd = [sys.executable, str(REPO / "run_benchmark.py"), "--file", str(bench), "--out", str(out),
           "--cpus-per-trial", "2"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    trials_dir = out / "trials"
    try:
        deadline = time.time() + 240
        # a finished file, not the hidden temporary one it is written to first (pathlib's * matches it too)
        while time.time() < deadline and not (trials_dir.is_dir() and any(
                not p.name.startswith(".") for p in trials_dir.glob("*.json"))):
            assert proc.poll() is None, "the run ended before it could be interrupted"
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)  # kill -9 of the driver, mid-run
        proc.wait(timeout=30)
    finally:
        try:  # Ray's own processes share the driver's fate; make sure of it for the test machine
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    finished = sorted(p.name for p in trials_dir.glob("*.json") if not p.name.startswith("."))
    assert 1 <= len(finished) < 4
    before = {f: (trials_dir / f).read_bytes() for f in finished}
    assert not list(trials_dir.glob(".tmp-*"))  # no half-written file

    import run_benchmark

    summary = run_benchmark.main(["--file", str(bench), "--out", str(out)])
    spec = load_spec(str(bench))
    all_ids = sorted(t.id for t in spec.trials())
    assert sorted(summary["skipped"]) == sorted(f[:-5] for f in finished)
    assert sorted(summary["ran"] + summary["skipped"]) == all_ids  # every trial exactly once
    assert sorted(p.name[:-5] for p in trials_dir.glob("*.json")) == all_ids
    assert all((trials_dir / f).read_bytes() == b for f, b in before.items())  # finished ones untouched
    assert all(r["status"] == "ok" for r in store.load_trials(str(out)))

    again = run_benchmark.main(["--file", str(bench), "--out", str(out)])  # nothing left to run
    assert again["ran"] == [] and sorted(again["skipped"]) == all_ids


def test_a_trial_stopped_mid_training_goes_on_from_its_snapshot(planted, tmp_path, local_ray):
    """A trial whose process ended after epoch 1 (a session's end, a lost worker) left a snapshot in the
    benchmark's folder; the rerun of the benchmark goes on from it, to the uninterrupted trial's result,
    says so in the record and removes the snapshot."""
    from recbole_metammf.benchmark import resume
    from recbole_metammf.benchmark.fingerprint import fingerprint_of_parts
    from recbole_metammf.benchmark.plan import run_benchmark
    from recbole_metammf.benchmark.runner import resume_folder

    root, name = planted
    conf = _data_yaml(root, name, tmp_path / "data.yaml", epochs=4)
    spec = BenchmarkSpec(models=["BPR"], datasets=[name], seeds=[1], config_files=[conf])
    trial = spec.trials()[0]
    run_benchmark(spec, str(tmp_path / "whole"), progress=False)
    whole = store.load_trial(str(tmp_path / "whole"), trial.id)
    assert "resumed" not in whole and os.listdir(tmp_path / "whole" / ".resume") == [".gitignore"]  # its folder went

    out = tmp_path / "bench"
    folder = resume_folder(str(out), store.TRIALS, trial.id, fingerprint_of_parts(trial.fingerprint_parts()))
    resume.activate(folder, every_s=0)

    def stop(point):
        if point["epoch"] == 1:
            raise RuntimeError("the session ends")

    try:
        stopped = run_trial(trial.model, trial.dataset, trial.seed, list(trial.config_files), dict(trial.config_dict),
                            on_epoch=stop)
    finally:
        resume.deactivate()
    assert stopped["status"] == "failed" and os.path.isfile(os.path.join(folder, resume.SNAPSHOT))

    summary = run_benchmark(spec, str(out), progress=False)
    assert summary["ran"] == [trial.id] and not summary["failed"]
    resumed = store.load_trial(str(out), trial.id)
    assert resumed["resumed"]["at_epoch"] == 1 and resumed["resumed"]["earlier_train_s"] > 0
    for key in ("valid_curve", "train_loss", "test_result", "best_epoch", "best_valid_result"):
        assert resumed[key] == whole[key], key
    assert not os.path.exists(folder)
    assert (out / ".resume" / ".gitignore").read_text().strip().endswith("*")  # never committed with results


def test_changed_config_is_not_silently_mixed_with_old_trials(tmp_path):
    from recbole_metammf.benchmark.plan import ChangedTrialError, plan

    conf = tmp_path / "a.yaml"
    conf.write_text("epochs: 1\n")
    spec = BenchmarkSpec(models=["BPR"], datasets=["d"], seeds=[1], config_files=[str(conf)])
    trial = spec.trials()[0]
    store.save_trial(str(tmp_path), {"trial_id": trial.id, "status": "ok", "fingerprint": trial.fingerprint()})
    assert plan(spec, str(tmp_path)) == ([], [trial])
    conf.write_text("epochs: 2\n")
    with pytest.raises(ChangedTrialError):
        plan(spec, str(tmp_path))
    assert plan(spec, str(tmp_path), force=True)[0] == [trial]


def test_a_failed_trial_runs_again_even_if_its_configuration_changed_since(tmp_path):
    """A failed trial keeps no result, so a change since (the dataset it could not find now exists, a fixed
    config) must not make the planner refuse the whole run as it does for a changed finished trial."""
    from recbole_metammf.benchmark.plan import ChangedTrialError, plan

    conf = tmp_path / "a.yaml"
    conf.write_text("epochs: 1\n")
    spec = BenchmarkSpec(models=["BPR", "Pop"], datasets=["d"], seeds=[1], config_files=[str(conf)])
    bpr, pop = spec.trials()
    store.save_trial(str(tmp_path), {"trial_id": bpr.id, "status": "failed", "fingerprint": bpr.fingerprint()})
    store.save_trial(str(tmp_path), {"trial_id": pop.id, "status": "ok", "fingerprint": pop.fingerprint()})
    conf.write_text("epochs: 2\n")
    with pytest.raises(ChangedTrialError) as err:  # the finished one still stops the run ...
        plan(spec, str(tmp_path))
    assert pop.id in str(err.value) and bpr.id not in str(err.value)  # ... and only it is named
    store.save_trial(str(tmp_path), {"trial_id": pop.id, "status": "ok", "fingerprint": pop.fingerprint()})
    assert plan(spec, str(tmp_path)) == ([bpr], [pop])


def test_fingerprint_follows_the_plugin_defaults_and_old_trial_files_still_resume(tmp_path, monkeypatch):
    import shutil

    from recbole_metammf import paths
    from recbole_metammf.benchmark.plan import ChangedTrialError, plan

    props = tmp_path / "properties"
    shutil.copytree(paths.PROPERTIES_DIR, props)
    monkeypatch.setattr(paths, "PROPERTIES_DIR", str(props))
    out = tmp_path / "out"
    spec = BenchmarkSpec(models=["MetaMMF_MF", "BPR"], datasets=["d"], seeds=[1])
    mf, bpr = spec.trials()
    before = {t.id: t.fingerprint() for t in (mf, bpr)}
    assert all(f.startswith("v3-") for f in before.values())
    for t in (mf, bpr):
        store.save_trial(str(out), {"trial_id": t.id, "status": "ok", "fingerprint": before[t.id]})
    assert plan(spec, str(out)) == ([], [mf, bpr])

    # a changed default of one model: only that model's trial is no longer finished
    yaml_path = props / "model" / "MetaMMF_MF.yaml"
    yaml_path.write_text(yaml_path.read_text().replace("id_embedding_size: 64", "id_embedding_size: 32"))
    assert mf.fingerprint() != before[mf.id] and bpr.fingerprint() == before[bpr.id]
    with pytest.raises(ChangedTrialError, match="MetaMMF_MF"):
        plan(spec, str(out))
    assert plan(spec, str(out), force=True) == ([mf], [bpr])
    # a changed protocol (overall.yaml) concerns every trial
    (props / "overall.yaml").write_text((props / "overall.yaml").read_text() + "\nstopping_step: 3\n")
    assert bpr.fingerprint() != before[bpr.id]

    # trial files from before version 3 are checked by the rule they were written under: version 2 ...
    store.save_trial(str(out), {"trial_id": bpr.id, "status": "ok", "fingerprint": bpr.fingerprint(2)})
    assert bpr.fingerprint(2).startswith("v2-") and bpr.matches(bpr.fingerprint(2))
    assert plan(BenchmarkSpec(models=["BPR"], datasets=["d"], seeds=[1]), str(out)) == ([], [bpr])
    # ... and version 1 (a bare 16-hex fingerprint, from before version 2)
    store.save_trial(str(out), {"trial_id": bpr.id, "status": "ok", "fingerprint": bpr.fingerprint(1)})
    assert len(bpr.fingerprint(1)) == 16 and bpr.matches(bpr.fingerprint(1))
    assert not bpr.matches(mf.fingerprint(1)) and not bpr.matches(None)
    assert not bpr.matches("v-" + bpr.fingerprint(1)) and not bpr.matches("vX-" + bpr.fingerprint(1))


# --- the report's numbers ----------------------------------------------------------------------
def _fake_record(model, seed, values: dict, dataset="toy"):
    curve = [{"epoch": e, "score": values["ndcg@10"] * (e + 1) / 3, "result": {}} for e in range(3)]
    return {
        "trial_id": f"{dataset}__{model}__seed{seed}", "model": model, "dataset": dataset, "seed": seed,
        "status": "ok", "valid_metric": "NDCG@10", "best_epoch": 2, "best_valid_result": values,
        "test_result": values, "valid_curve": curve, "train_time_s": 1.0, "valid_time_s": 0.1,
        "test_time_s": 0.1, "peak_memory_mb": 100.0, "model_params": {"embedding_size": 64},
        "training": {"epochs": 3, "eval_step": 1, "stopping_step": 10},
        "protocol": {"eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "group_by": "user", "order": "RO",
                                   "mode": "full"},
                     "metrics": ["Precision", "NDCG"], "topk": [10, 20], "valid_metric": "NDCG@10"},
        "dataset_stats": {"n_users": 10, "n_items": 20, "n_interactions": 100, "density": 0.5,
                          "split_interactions": [80, 10, 10], "item_features": {"v": "FLOAT_SEQ"}},
        "versions": {"python": "3", "torch": "t", "recbole": "r", "recbole_metammf": "m"},
    }


def test_report_numbers_equal_a_hand_computation(tmp_path):
    rng = np.random.default_rng(0)
    keys = ["precision@10", "precision@20", "ndcg@10", "ndcg@20"]
    level = {"A": 0.30, "B": 0.28, "C": 0.10}
    seeds = [1, 2, 3, 4]
    values = {m: {s: {k: round(float(level[m] + rng.normal(0, 0.01)), 4) for k in keys} for s in seeds}
              for m in level}
    for m in level:
        for s in seeds:
            store.save_trial(str(tmp_path), _fake_record(m, s, values[m][s]))
    failed = {"trial_id": "toy__D__seed1", "model": "D", "dataset": "toy", "seed": 1, "status": "failed",
              "error": "boom"}
    store.save_trial(str(tmp_path), failed)

    summaries = write_report(str(tmp_path))
    s = summaries["toy"]
    assert s["keys"] == keys and s["focus"] == "A" and s["models"] == ["A", "B", "C"]  # failed D left out

    with open(tmp_path / "toy" / "leaderboard.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows[:3]] == ["A", "B", "C"]
    for row in rows[:3]:
        m = row["model"]
        for k, label in zip(keys, ["P@10", "P@20", "NDCG@10", "NDCG@20"]):
            xs = [values[m][sd][k] for sd in seeds]
            assert float(row[label]) == pytest.approx(np.mean(xs), abs=1e-6)
            assert float(row[label + "_std"]) == pytest.approx(np.std(xs, ddof=1), abs=1e-6)
    improvement, p_row = rows[3], rows[4]
    for k, label in zip(keys, ["P@10", "P@20", "NDCG@10", "NDCG@20"]):
        a = [values["A"][sd][k] for sd in seeds]
        b_mean = {m: np.mean([values[m][sd][k] for sd in seeds]) for m in ("B", "C")}
        rival = max(b_mean, key=b_mean.get)
        b = [values[rival][sd][k] for sd in seeds]
        assert s["improvement"][k]["rival"] == rival
        assert float(improvement[label]) == pytest.approx((np.mean(a) - np.mean(b)) / np.mean(b) * 100, abs=1e-4)
        assert float(p_row[label]) == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-5)

    md = (tmp_path / "toy" / "leaderboard.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ")]
    row = {line.split(" | ")[0][2:]: line for line in table}
    for k in keys:  # best bold, second underlined, third plain
        best = max(level, key=lambda m: np.mean([values[m][sd][k] for sd in seeds]))
        assert best in s["best"][k]
    assert row["A"].count("**") == 2 * len(s["best"]["precision@10"] and [k for k in keys if "A" in s["best"][k]])
    assert "**" not in row["C"] and "<u>" not in row["C"]
    assert "%Improv. A" in md and "toy__D__seed1" in md and "full ranking" in md
    assert (tmp_path / "toy" / "bars.png").exists() and (tmp_path / "toy" / "valid_curves.png").exists()

    # the same from the command line
    import run_benchmark

    run_benchmark.main(["--report", str(tmp_path), "--focus", "B"])
    with open(tmp_path / "toy" / "leaderboard.csv") as f:
        assert "B vs best other" in f.read()


def test_single_seed_has_zero_std_and_no_p_value():
    rec = [_fake_record("A", 1, {"precision@10": .3, "precision@20": .2, "ndcg@10": .3, "ndcg@20": .3}),
           _fake_record("B", 1, {"precision@10": .2, "precision@20": .1, "ndcg@10": .2, "ndcg@20": .2})]
    s = summarise(rec)
    assert s["table"]["A"]["ndcg@10"] == (pytest.approx(0.3), 0.0)
    assert np.isnan(s["improvement"]["ndcg@10"]["p_value"])
    assert s["improvement"]["ndcg@10"]["percent"] == pytest.approx(50.0)


def test_protocol_names_a_fixed_split_when_the_dataset_brings_its_own():
    from recbole_metammf.benchmark.report import _protocol_text

    rec = _fake_record("A", 1, {"ndcg@10": .3})
    assert "Split: {'RS': [0.8, 0.1, 0.1]}" in _protocol_text(rec) and "seeded by each trial's seed" in _protocol_text(rec)
    rec["config"] = {"benchmark_filename": ["train", "valid", "test"]}
    text = _protocol_text(rec)
    assert "RS" not in text and "`toy.{train,valid,test}.inter`" in text and "same train/valid/test" in text


def test_a_benchmark_files_note_is_printed_in_its_leaderboard(tmp_path):
    bench = tmp_path / "b.yaml"
    bench.write_text("models: [A, B]\ndatasets: [toy]\nseeds: 1\nnote: >\n  Every model at most\n  20 epochs.\n")
    spec = load_spec(str(bench))
    assert spec.note == "Every model at most 20 epochs." and spec.seeds == [2020]
    for m, v in (("A", .3), ("B", .2)):
        store.save_trial(str(tmp_path), _fake_record(m, 2020, {"ndcg@10": v}))
    store.save_manifest(str(tmp_path), {"command": "python run_benchmark.py --file b.yaml", "spec": spec.to_dict()})
    write_report(str(tmp_path))
    md = (tmp_path / "toy" / "leaderboard.md").read_text()
    assert md.index("--file b.yaml") < md.index("Every model at most 20 epochs.") < md.index("| Model |")
    assert "Every model at most 20 epochs." in (tmp_path / "README.md").read_text()


# --- hyper-parameter search --------------------------------------------------------------------
@pytest.mark.parametrize("tool", ["hyperopt", "ray"])
def test_hyper_search_over_a_tiny_space_picks_the_best_point(planted, tmp_path, tool):
    root, name = planted
    conf = _data_yaml(root, name, tmp_path / "data.yaml", epochs=2)
    space = tmp_path / "tiny.hyper"
    space.write_text("learning_rate choice [0.0,0.01]\n")  # a rate of 0 cannot learn
    out = tmp_path / "best.yaml"
    import run_hyper

    result = run_hyper.main(["--model", "BPR", "--dataset", name, "--params_file", str(space),
                             "--config_files", conf, "--output", str(out), "--tool", tool])
    scores = {p["params"]["learning_rate"]: p["best_valid_score"] for p in result["points"]}
    assert set(scores) == {0.0, 0.01}
    assert result["best_params"] == {"learning_rate": 0.01}
    assert result["best_valid_score"] == max(scores.values()) > scores[0.0]
    assert yaml.safe_load(out.read_text()) == {"learning_rate": 0.01}
    points = json.loads(out.with_suffix(".points.json").read_text())
    assert points["best_params"] == {"learning_rate": 0.01}

    from recbole.config import Config

    config = Config(model="BPR", dataset=name, config_file_list=[conf, str(out)])  # what run_recbole.py reads
    assert config["learning_rate"] == 0.01


def test_an_interrupted_hyper_search_writes_the_best_finished_point_and_says_so(planted, tmp_path, monkeypatch,
                                                                                  capsys):
    # Ctrl-C during the third of four points: the two finished ones are kept, the better one written, exit 130.
    root, name = planted
    conf = _data_yaml(root, name, tmp_path / "data.yaml", epochs=1)
    space = tmp_path / "four.hyper"
    space.write_text("learning_rate choice [0.001,0.002,0.003,0.004]\n")
    from recbole_metammf.benchmark import hyper

    calls = []

    def fake_trial(model, dataset, seed, config_file_list, config_dict, **kw):
        calls.append(config_dict["learning_rate"])
        if len(calls) == 3:
            raise KeyboardInterrupt
        score = {0.001: .1, 0.002: .3, 0.003: .2, 0.004: .4}[config_dict["learning_rate"]]
        return {"status": "ok", "best_valid_score": score, "best_epoch": 0, "best_valid_result": {},
                "test_result": {}, "config": {"valid_metric_bigger": True}}

    monkeypatch.setattr(hyper, "run_trial", fake_trial)
    import run_hyper

    out = tmp_path / "best.yaml"
    with pytest.raises(SystemExit) as stop:
        run_hyper.main(["--model", "BPR", "--dataset", name, "--params_file", str(space), "--config_files", conf,
                        "--output", str(out)])
    assert stop.value.code == 130 and len(calls) == 3
    finished = {0.001: .1, 0.002: .3, 0.003: .2, 0.004: .4}
    best = max(calls[:2], key=finished.get)  # hyperopt's order over the grid is its own
    assert yaml.safe_load(out.read_text()) == {"learning_rate": best}
    assert "interrupted" in out.read_text().splitlines()[1]
    points = json.loads(out.with_suffix(".points.json").read_text())
    assert points["interrupted"] is True and [p["params"]["learning_rate"] for p in points["points"]] == calls[:2]
    assert "Interrupted after 2 finished point(s)" in capsys.readouterr().err

    calls.clear()
    out.unlink()
    monkeypatch.setattr(hyper, "run_trial", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(SystemExit) as stop:  # before any point finished: nothing written
        run_hyper.main(["--model", "BPR", "--dataset", name, "--params_file", str(space), "--config_files", conf,
                        "--output", str(out)])
    assert stop.value.code == 130 and not out.exists()
    assert "nothing written" in capsys.readouterr().err


def test_manifest_keeps_the_rows_of_earlier_runs_and_lists_each_command():
    from recbole_metammf.benchmark.report import produced_by
    from recbole_metammf.benchmark.store import merged_spec

    full = {"spec": {"models": ["A", "B", "C"], "datasets": ["d"]}}
    assert merged_spec(full, {"models": ["B"], "datasets": ["d"], "seeds": [1]}) == {
        "models": ["A", "B", "C"], "datasets": ["d"], "seeds": [1]}
    assert merged_spec({}, {"models": ["B", "A"], "datasets": ["d"]})["models"] == ["B", "A"]
    assert merged_spec(full, {"models": ["D"], "datasets": ["e"]})["models"] == ["A", "B", "C", "D"]

    one = {"command": "python run_benchmark.py --file f.yaml",
           "runs": [{"command": "python run_benchmark.py --file f.yaml", "started_at": "t0"}] * 2}
    assert produced_by(one) == ["Produced by:", "", "```bash", "python run_benchmark.py --file f.yaml", "```", ""]
    two = {"command": "python run_benchmark.py --file f.yaml --models B --force",
           "runs": [{"command": "python run_benchmark.py --file f.yaml", "started_at": "t0"},
                    {"command": "python run_benchmark.py --file f.yaml", "started_at": "t1"},
                    {"command": "python run_benchmark.py --file f.yaml --models B --force", "started_at": "t2"}]}
    lines = produced_by(two)
    assert lines[0].startswith("Produced by these runs")
    assert lines[3:5] == ["python run_benchmark.py --file f.yaml    # t0",
                          "python run_benchmark.py --file f.yaml --models B --force    # t2"]
    assert produced_by({}) == []


# --- the results folder: two drivers, unwritable, damaged files (issue 23) ------------------------------
def _one_line_error(capsys, main, argv) -> str:
    """Run an entry point as its command line does; assert exit status 2 and exactly one stderr line."""
    from recbole_metammf.entry import run_cli

    capsys.readouterr()
    assert run_cli(main, argv) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_a_second_driver_refuses_naming_the_live_holder_and_takes_over_a_dead_ones_lock(planted, tmp_path, capsys):
    import socket

    import run_benchmark

    root, name = planted
    conf = _data_yaml(root, name, tmp_path / "data.yaml", epochs=1)
    out = tmp_path / "bench"
    out.mkdir()
    # another driver holding the folder: its own process, holding the lock as run_benchmark.py does
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from recbole_metammf.benchmark import store; "
         "store.acquire_lock(sys.argv[1], 'python run_benchmark.py ...'); print('held', flush=True); time.sleep(120)",
         str(out)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        argv = ["--models", "BPR", "--datasets", name, "--config_files", conf, "--out", str(out)]
        line = _one_line_error(capsys, run_benchmark.main, argv)
        assert f"host {socket.gethostname()}, pid {holder.pid}, since 20" in line and str(out) in line
        assert not (out / "trials").exists() or not list((out / "trials").glob("*.json"))  # nothing ran
    finally:
        holder.kill()  # kill -9: the lock file stays, naming a driver that is gone
        holder.wait()
    left = json.loads((out / store.LOCK).read_text())
    assert left["pid"] == holder.pid
    fd = store.acquire_lock(str(out), "second")
    err = capsys.readouterr().err
    assert f"taking over the lock left by host {socket.gethostname()}, pid {holder.pid}" in err
    assert json.loads((out / store.LOCK).read_text())["pid"] == os.getpid()
    store.release_lock(str(out), fd)
    assert not (out / store.LOCK).exists()


def test_an_unwritable_results_folder_is_refused_in_one_line_before_any_trial(planted, tmp_path, capsys):
    import run_benchmark

    root, name = planted
    conf = _data_yaml(root, name, tmp_path / "data.yaml", epochs=1)
    where = tmp_path / "taken"
    where.write_text("a file where the results folder should be\n")
    argv = ["--models", "BPR", "--datasets", name, "--config_files", conf, "--out", str(where)]
    line = _one_line_error(capsys, run_benchmark.main, argv)
    assert line == f"error: cannot write trial files into {where}: {where} is a file, not a folder"
    folder = tmp_path / "bench"
    folder.mkdir()
    (folder / "trials").write_text("")  # the trials folder cannot be made
    argv[-1] = str(folder)
    assert "cannot write trial files into" in _one_line_error(capsys, run_benchmark.main, argv)
    assert where.read_text().startswith("a file") and not (folder / store.LOCK).exists()


def test_a_trial_whose_file_cannot_be_written_is_recorded_as_failed_and_runs_again(planted, tmp_path, local_ray,
                                                                                    monkeypatch):
    import errno

    from recbole_metammf.benchmark.plan import run_benchmark

    root, name = planted
    conf = _data_yaml(root, name, tmp_path / "data.yaml", epochs=1)
    spec = BenchmarkSpec(models=["BPR"], datasets=[name], seeds=[1], config_files=[conf])
    out = tmp_path / "bench"
    real = store.save_trial

    def disk_full_for_results(out_dir, record, sub=store.TRIALS):
        if record["status"] == "ok":  # the result, not the small failed record written in its place
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(out_dir, record, sub)

    monkeypatch.setattr(store, "save_trial", disk_full_for_results)
    summary = run_benchmark(spec, str(out), progress=False, report=False)
    tid = f"{name}__BPR__seed1"
    assert summary["failed"] == [tid] and summary["unsaved"] == [tid] and summary["ran"] == [tid]
    record = store.load_trial(str(out), tid)
    assert record["status"] == "failed" and "could not be written" in record["error"]
    assert "No space left on device" in record["error"]
    monkeypatch.setattr(store, "save_trial", real)
    again = run_benchmark(spec, str(out), progress=False, report=False)  # a failed trial runs again
    assert again["ran"] == [tid] and not again["failed"]
    assert store.load_trial(str(out), tid)["status"] == "ok"


def test_a_damaged_trial_file_is_named_set_aside_on_resume_and_left_out_of_the_report(tmp_path, capsys):
    import run_benchmark
    from recbole_metammf.benchmark.plan import plan

    out = tmp_path / "bench"
    records = _fake_board(out)  # two models x two seeds, as test_report_numbers_equal_a_hand_computation
    damaged = out / "trials" / f"{records[-1]['trial_id']}.json"
    damaged.write_text(damaged.read_text()[:40])  # cut short
    capsys.readouterr()
    run_benchmark.main(["--report", str(out)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert err == [f"warning: {damaged}: damaged trial file, not valid JSON; the report is written without it"]
    readme = (out / "README.md").read_text()
    assert f"**Left out:** 1 damaged trial file(s), not valid JSON: `trials/{damaged.name}`" in readme
    assert "3 finished trial(s), 0 failed." in readme
    board = (out / "d" / "leaderboard.md").read_text()
    assert "| A | 2 |" in board and "| B | 1 |" in board  # B's seed-2 trial left out, not the board

    spec = BenchmarkSpec(models=["A", "B"], datasets=["d"], seeds=[1, 2])
    for r in records[:-1]:  # the intact files: this spec's own trials, finished
        trial = next(t for t in spec.trials() if t.id == r["trial_id"])
        store.save_trial(str(out), {**r, "fingerprint": trial.fingerprint()})
    to_run, finished = plan(spec, str(out))
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert [t.id for t in to_run] == [records[-1]["trial_id"]] and len(finished) == 3
    assert len(err) == 1 and err[0].startswith(f"warning: {damaged}: damaged trial file, not valid JSON (")
    assert err[0].endswith(f"set aside as {damaged.name}.corrupt, the trial runs again")
    assert not damaged.exists() and (damaged.parent / f"{damaged.name}.corrupt").read_text().startswith("{")


def _fake_board(out) -> list[dict]:
    """Trial files of models A and B x seeds 1 and 2 on dataset ``d`` (records in file-name order)."""
    records = [_fake_record(m, s, {"precision@10": 0.1 + s / 100, "precision@20": 0.1, "ndcg@10": 0.2 + s / 100,
                                   "ndcg@20": 0.2}, dataset="d") for m in ("A", "B") for s in (1, 2)]
    for r in records:
        store.save_trial(str(out), r)
    return records


def test_local_ray_gives_the_dashboard_agent_time_to_register_unless_the_user_set_it(monkeypatch):
    """A raylet whose agent has not registered in 30 s (Ray's default) dies with every trial on it;
    init_ray() lets a local Ray wait 5 minutes, and keeps a value the user set."""
    import ray

    from recbole_metammf.benchmark import runner

    seen = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: seen.append(os.environ.get("RAY_agent_register_timeout_ms")))
    monkeypatch.delenv("RAY_agent_register_timeout_ms", raising=False)
    assert runner.init_ray() is True
    monkeypatch.setenv("RAY_agent_register_timeout_ms", "1234")
    runner.init_ray()
    assert seen == ["300000", "1234"]
