"""The tuned benchmark mode: sampling, successive halving, resume, stale trials, named entries, its report,
and the search spaces the project ships.

The runs use the small planted dataset with 1-2 epochs; Ray runs locally on the machine's cores.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import yaml

from conftest import REPO, planted_config
from recbole_metammf.benchmark import store
from recbole_metammf.benchmark.spec import BenchmarkSpec, load_spec
from recbole_metammf.benchmark.store import SEARCH
from recbole_metammf.benchmark.tune import TunedPlan, inline_space, promote, rank, sample_configs, space_size

HYPER = REPO / "hyper"
ROWS = ["MetaMMF_GCN", "MetaMMF_GCN-LightGCN", "MetaMMF_MF", "LightGCN", "BPR", "VBPR", "MMGCN", "GRCN", "LATTICE",
        "FREEDOM"]


def _data_yaml(root, name, path, **extra):
    cfg = planted_config(root, name, **extra)
    cfg.pop("seed")
    cfg.pop("checkpoint_dir")
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


# --- sampling and selection (no training) ------------------------------------------------------------
def test_sampling_is_deterministic_covers_each_choice_evenly_and_refuses_a_small_space():
    space = inline_space({"learning_rate": [1e-4, 1e-3, 1e-2, 1e-1], "reg_weight": [0.0, 1e-5, 1e-4],
                          "knn_k": [5, 10, 20], "dropout": "uniform 0.0 0.5", "wd": "loguniform -9 -4"})
    a = sample_configs(space, 8, 2020, "LATTICE")
    assert a == sample_configs(space, 8, 2020, "LATTICE")          # a rerun samples the same ones
    assert a != sample_configs(space, 8, 2021, "LATTICE") and a != sample_configs(space, 8, 2020, "FREEDOM")
    assert len({json.dumps(c, sort_keys=True) for c in a}) == 8    # distinct
    lrs = [c["learning_rate"] for c in a]
    assert sorted(lrs) == sorted([1e-4, 1e-3, 1e-2, 1e-1] * 2)     # Latin hypercube: each rate twice
    assert all(0.0 <= c["dropout"] < 0.5 and math.exp(-9) <= c["wd"] <= math.exp(-4) for c in a)
    assert sorted(int(c["dropout"] // (0.5 / 8)) for c in a) == list(range(8))  # one point per stratum

    grid = inline_space({"learning_rate": [0.004, 0.012], "reg_weight": [0.0, 1e-4]})
    assert sample_configs(grid, 4, 1, "X") == [  # exactly as many points as configs: the whole grid, in order
        {"learning_rate": 0.004, "reg_weight": 0.0}, {"learning_rate": 0.004, "reg_weight": 1e-4},
        {"learning_rate": 0.012, "reg_weight": 0.0}, {"learning_rate": 0.012, "reg_weight": 1e-4}]
    with pytest.raises(ValueError, match="fewer than the 5 configurations"):
        sample_configs(grid, 5, 1, "X")


def test_a_parameter_appended_to_a_space_leaves_the_earlier_parameters_draws_unchanged():
    # What MetaMMF's spaces rely on: content_scale, their last line, was added after the TikTok board had
    # searched them, and the new search's eight points are the old eight, each with a scale added.
    base = {"learning_rate": [1e-4, 5e-4, 1e-3, 5e-3], "reg_weight": [0.0, 1e-5, 1e-4, 1e-3], "meta_size": [3, 5, 10]}
    old = sample_configs(inline_space(base), 8, 2020, "MetaMMF_MF")
    new = sample_configs(inline_space({**base, "content_scale": ["none", "rms", "gate"]}), 8, 2020, "MetaMMF_MF")
    assert [{k: v for k, v in c.items() if k != "content_scale"} for c in new] == old
    counts = [sum(c["content_scale"] == v for c in new) for v in ("none", "rms", "gate")]
    assert sorted(counts) == [2, 3, 3]  # 8 strata over 3 values: each value 2 or 3 times
    first = sample_configs(inline_space({"content_scale": ["none", "rms", "gate"], **base}), 8, 2020, "MetaMMF_MF")
    assert [{k: v for k, v in c.items() if k != "content_scale"} for c in first] != old  # order matters


def test_a_search_space_too_small_for_the_budget_is_one_user_error_before_any_trial(planted, tmp_path):
    import run_benchmark

    from recbole_metammf.errors import UserError

    root, name = planted
    conf = _data_yaml(root, name, tmp_path / "data.yaml", epochs=1)
    bench = tmp_path / "small.yaml"
    bench.write_text(yaml.safe_dump({"models": ["BPR"], "datasets": [name], "config_files": [conf],
                                     "tune": {"configs": 3, "spaces": {"BPR": {"learning_rate": [0.01, 0.1]}}}}))
    with pytest.raises(UserError, match="search space of BPR has 2 point"):
        run_benchmark.main(["--file", str(bench), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out" / SEARCH).exists()
    bench.write_text(yaml.safe_dump({"models": ["BPR"], "datasets": [name], "tune": {"rungs": [30, 10]}}))
    with pytest.raises(UserError, match="tune.rungs must be increasing"):
        run_benchmark.main(["--file", str(bench), "--out", str(tmp_path / "out")])


def test_promotion_keeps_the_best_fraction_ties_to_the_lower_index_and_drops_failures():
    scores = {0: 0.10, 1: 0.30, 2: None, 3: 0.30, 4: 0.20}
    assert rank([0, 1, 2, 3, 4], scores) == [1, 3, 4, 0]
    assert promote([0, 1, 2, 3, 4], scores, eta=2) == [1, 3, 4]     # ceil(5 / 2) = 3, failed #2 never
    assert promote([0, 1, 2, 3, 4], scores, eta=4) == [1, 3]
    assert rank([0, 1, 4], scores, bigger=False) == [0, 4, 1]       # a metric where smaller is better
    assert promote([2], {2: None}, eta=2) == []


def test_parse_space_reads_exponent_floats_as_numbers():
    from recbole_metammf.benchmark.hyper import parse_space

    space = parse_space(str(HYPER / "GRCN.hyper"))
    assert space["reg_weight"][1] == [1e-5, 1e-4, 1e-3, 1e-2, 1e-1]  # YAML alone reads '1e-5' as a string
    assert all(isinstance(v, float) for v in space["reg_weight"][1])


# --- the shipped search spaces and benchmark files --------------------------------------------------
def _known_keys(model: str) -> set:
    from recbole_metammf.benchmark.trial import model_param_names

    return set(model_param_names(model)) | {"learning_rate", "weight_decay"}


def _yaml_defaults(model: str) -> dict:
    path = REPO / "properties" / "model" / f"{model}.yaml"
    return yaml.safe_load(path.read_text()) if path.exists() else {}


@pytest.mark.parametrize("row", ROWS)
def test_every_row_ships_a_search_space_of_real_keys_with_rate_and_regularisation(row):
    from recbole_metammf.benchmark.tune import row_space

    spec = load_spec(str(REPO / "benchmarks" / "tuned" / "mm-ml-100k.yaml"))
    space, where = row_space(spec, row)
    model = spec.model_of(row)
    assert where == f"hyper/{row}.hyper"
    assert space_size(space) >= spec.tune["configs"]
    assert set(space) <= _known_keys(model), set(space) - _known_keys(model)  # no typo'd key
    assert "learning_rate" in space
    reg = "reg_weight" if "reg_weight" in _known_keys(model) else "weight_decay"
    assert reg in space and len(space[reg][1]) >= 3
    if model.startswith("MetaMMF"):
        assert {"meta_size", "cp_rank"} <= set(space)
        assert ("content_reg_weight" in space) == ("content_reg_weight" in _yaml_defaults(model))
        from recbole_metammf.layers.fusion import CONTENT_SCALES  # every scale, chosen per dataset on validation

        assert sorted(space["content_scale"][1]) == sorted(CONTENT_SCALES), space.get("content_scale")
        assert list(space)[-1] == "content_scale"  # last, so the other keys draw what they drew before it


def test_the_three_tuned_benchmark_files_plan_their_rows_with_one_budget():
    for name, configs, rungs in (("mm-ml-100k", 8, [10, 30]), ("tiktok-diffmm", 8, [10, 30]), ("microlens", 4, [])):
        spec = load_spec(str(REPO / "benchmarks" / "tuned" / f"{name}.yaml"))
        rows = ROWS + ["BM3", "MGCN", "DRAGON", "LGMRec", "DiffMM"] if name == "tiktok-diffmm" else ROWS
        seeds = [2020, 2021, 2022, 2023, 2024] if name == "tiktok-diffmm" else [2020, 2021, 2022]
        assert spec.models == rows and spec.seeds == seeds and spec.datasets == [name]
        assert spec.model_of("MetaMMF_GCN-LightGCN") == "MetaMMF_GCN"
        assert spec.settings(name)["MetaMMF_GCN-LightGCN"][2]["propagation"] == "lightgcn"
        assert spec.tune["configs"] == configs and spec.tune["rungs"] == rungs
        plan = TunedPlan(spec, "/nonexistent")
        assert all(len(plan.samples[r]) == configs for r in rows)  # the same number for every row
        first = plan.step()
        assert len(first) == configs * len(rows) and all(a.sub == SEARCH for a in first)
    micro = load_spec(str(REPO / "benchmarks" / "tuned" / "microlens.yaml"))
    assert micro.tune["max_last_epoch_share"] is None and micro.config["train_batch_size"] == 8192
    for row in ROWS:  # a 2 x 2 grid: learning rate x one regularisation key the model has
        space = inline_space(micro.tune["spaces"][row])
        assert list(space)[0] == "learning_rate" and space_size(space) == 4
        assert set(space) <= _known_keys(micro.model_of(row))
    tiktok = load_spec(str(REPO / "benchmarks" / "tuned" / "tiktok-diffmm.yaml"))
    assert tiktok.config["valid_metric"] == "Recall@20" and tiktok.config["benchmark_filename"] == ["train", "valid", "test"]
    # issue 22's board: a patience no single plateau decides, the DiffMM-style selection recorded beside the result
    assert tiktok.config["stopping_step"] == 50 and tiktok.config["diagnose_best_test_epoch"] is True


def test_a_named_entry_has_its_own_trial_ids_and_config_in_plain_mode_too():
    spec = BenchmarkSpec(models=["MetaMMF_GCN", "MetaMMF_GCN-LightGCN"], datasets=["d"], seeds=[1],
                         entries={"MetaMMF_GCN-LightGCN": {"model": "MetaMMF_GCN", "config": {"propagation": "lightgcn"}}},
                         model_config={"MetaMMF_GCN-LightGCN": {"n_layers": 3}})
    sage, light = spec.trials()
    assert (sage.id, light.id) == ("d__MetaMMF_GCN__seed1", "d__MetaMMF_GCN-LightGCN__seed1")
    assert light.model == "MetaMMF_GCN" and light.config_dict == {"propagation": "lightgcn", "n_layers": 3}
    assert "propagation" not in sage.config_dict and sage.fingerprint() != light.fingerprint()
    with pytest.raises(ValueError, match="needs a 'model'"):
        BenchmarkSpec(models=["X"], datasets=["d"], seeds=[1], entries={"X": {"config": {}}})
    with pytest.raises(ValueError, match="no '__'"):
        BenchmarkSpec(models=["a__b"], datasets=["d"], seeds=[1])

    from recbole_metammf.benchmark.report import as_rows

    rows = as_rows([{"model": "MetaMMF_GCN", "row": "MetaMMF_GCN-LightGCN"}, {"model": "BPR"}])
    assert rows == [{"model": "MetaMMF_GCN-LightGCN", "row": "MetaMMF_GCN-LightGCN", "recbole_model": "MetaMMF_GCN"},
                    {"model": "BPR"}]


# --- stale trials: code and data in the fingerprint ----------------------------------------------------
def _fake_search_record(trial, score, epochs=2, status="ok"):
    curve = [{"epoch": e, "score": score * (e + 1) / epochs, "result": {}} for e in range(epochs)]
    return {"trial_id": trial.id, "model": trial.model, "dataset": trial.dataset, "seed": trial.seed,
            "status": status, "best_valid_score": score, "best_epoch": epochs - 1, "valid_curve": curve,
            "config": {"valid_metric_bigger": True}, "fingerprint": trial.fingerprint(),
            "fingerprint_parts": trial.fingerprint_parts()}


def test_changed_code_or_dataset_files_make_trials_stale_and_the_run_refuses_naming_them(planted, tmp_path,
                                                                                          monkeypatch):
    from recbole_metammf.benchmark import fingerprint as fingerprint_module
    from recbole_metammf.benchmark.plan import ChangedTrialError, plan
    from recbole_metammf.benchmark.plan import run_tuned

    root, name = planted
    package = tmp_path / "pkg"  # a copy of the plugin's code to edit
    shutil.copytree(fingerprint_module.PLUGIN_DIR, package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(fingerprint_module, "PLUGIN_DIR", str(package))
    conf = _data_yaml(root, name, tmp_path / "data.yaml", epochs=2)
    space = tmp_path / "lr.hyper"
    space.write_text("learning_rate choice [0.001,0.01]\n")
    spec = BenchmarkSpec(models=["BPR", "MetaMMF_MF"], datasets=[name], seeds=[1], config_files=[conf],
                         tune={"configs": 2, "spaces": {"BPR": str(space), "MetaMMF_MF": str(space)}})
    out = tmp_path / "out"
    tuned = TunedPlan(spec, str(out))
    actions = tuned.step()
    assert sorted(a.trial.id for a in actions) == [f"{name}__{r}__cfg{k}__r0" for r in ("BPR", "MetaMMF_MF")
                                                   for k in (0, 1)]
    for i, a in enumerate(actions):  # as if they had run
        tuned.put(SEARCH, {**_fake_search_record(a.trial, 0.1 + i / 100), **a.meta})
    nxt = TunedPlan(spec, str(out)).step()
    assert {a.trial.id for a in nxt} == {f"{name}__BPR__seed1", f"{name}__MetaMMF_MF__seed1"}
    assert all(a.kind == "reuse" for a in nxt)  # the chosen config's search run is the seed-1 final trial

    # the plugin's code changes: one model's own file -> that model's trials only
    model_file = package / "model" / "metammf_mf.py"
    model_file.write_text(model_file.read_text() + "\n# an edit\n")
    again = TunedPlan(spec, str(out))
    planned = again.step()  # BPR goes on; nothing of MetaMMF_MF runs beside its stale trials
    assert [a.trial.id for a in planned] == [f"{name}__BPR__seed1"]
    assert sorted(again.stale) == [(SEARCH, f"{name}__MetaMMF_MF__cfg{k}__r0") for k in (0, 1)]
    assert set(again.stale.values()) == {"plugin code changed"}
    with pytest.raises(ChangedTrialError) as err:
        run_tuned(spec, str(out), progress=False, report=False)
    assert f"search/{name}__MetaMMF_MF__cfg0__r0 (plugin code changed)" in str(err.value)
    assert "BPR" not in str(err.value)
    # shared code (the fusion layers, the config layers) -> every plugin trial, RecBole's BPR too
    (package / "compat.py").write_text((package / "compat.py").read_text() + "\n# an edit\n")
    again = TunedPlan(spec, str(out))
    again.step()
    assert len(again.stale) == 4
    # with --force they are planned again instead
    assert len(TunedPlan(spec, str(out), force=True).step()) == 4

    # the dataset's files change: every trial on it, with the reason
    fresh = tmp_path / "out2"
    t = TunedPlan(spec, str(fresh))
    for a in t.step():
        t.put(SEARCH, {**_fake_search_record(a.trial, 0.2), **a.meta})
    unchanged = TunedPlan(spec, str(fresh))
    assert len(unchanged.step()) == 2 and unchanged.stale == {}
    with open(root / name / f"{name}.inter", "a") as f:
        f.write("1\t2\n")
    changed = TunedPlan(spec, str(fresh))
    changed.step()
    assert len(changed.stale) == 4 and set(changed.stale.values()) == {"dataset files changed"}

    # the plain mode says the same about its trials
    plain = BenchmarkSpec(models=["BPR"], datasets=[name], seeds=[1], config_files=[conf])
    trial = plain.trials()[0]
    store.save_trial(str(tmp_path / "plain"), {"trial_id": trial.id, "status": "ok", "fingerprint": trial.fingerprint(),
                                               "fingerprint_parts": trial.fingerprint_parts()})
    assert plan(plain, str(tmp_path / "plain")) == ([], [trial])
    with open(root / name / f"{name}.item", "a") as f:
        f.write("\n")
    with pytest.raises(ChangedTrialError, match=rf"{name}__BPR__seed1 \(dataset files changed\)"):
        plan(plain, str(tmp_path / "plain"))


def test_failed_search_trials_count_as_worst_and_rerun_only_while_their_rung_is_unused(tmp_path):
    space = tmp_path / "lr.hyper"
    space.write_text("learning_rate choice [0.001,0.01,0.05,0.1]\n")
    spec = BenchmarkSpec(models=["BPR"], datasets=["d"], seeds=[1, 2],
                         tune={"configs": 4, "rungs": [1], "spaces": {"BPR": str(space)}})
    out = str(tmp_path / "out")
    plan = TunedPlan(spec, out)
    first = plan.step()
    for a in first:  # configs 0 and 1 failed, 2 scored best
        plan.attempted.add(a.trial.id)  # as the run loop does when it submits a trial
        status = "failed" if a.meta["config_index"] < 2 else "ok"
        plan.put(SEARCH, {**_fake_search_record(a.trial, {2: 0.3, 3: 0.2}.get(a.meta["config_index"], 0.0),
                                                status=status), **a.meta})
    retry = TunedPlan(spec, out).step()  # a new run: the failures are retried, nothing else
    assert [a.trial.id for a in retry] == ["d__BPR__cfg0__r0", "d__BPR__cfg1__r0"]
    same_run = plan.step()  # in the run that saw them fail they count as the worst: 2 and 3 go on
    assert [(a.meta["config_index"], a.meta["rung"]) for a in same_run] == [(2, 1), (3, 1)]
    plan.put(SEARCH, {**_fake_search_record(same_run[0].trial, 0.31), **same_run[0].meta})
    assert [a.trial.id for a in TunedPlan(spec, out).step()] == ["d__BPR__cfg3__r1"]  # rung 0 was used


def test_the_progress_total_counts_the_trials_left_to_run_at_every_stage_of_a_resumed_search(tmp_path):
    # four configurations, one rung, the best two to early stopping, seeds 1-2 (seed 1's final trial is the
    # search trial copied): 4 + 2 + 1 runs in all; a second row is already complete and adds nothing
    space = tmp_path / "lr.hyper"
    space.write_text("learning_rate choice [0.001,0.01,0.05,0.1]\n")
    spec = BenchmarkSpec(models=["BPR", "Pop"], datasets=["d"], seeds=[1, 2],
                         tune={"configs": 4, "rungs": [1], "spaces": {"BPR": str(space), "Pop": str(space)}})
    out = str(tmp_path / "out")

    def finish(plan, actions, row="BPR"):
        for a in actions:
            if a.trial.row == row and a.kind == "run":
                score = 0.1 + 0.01 * a.meta.get("config_index", a.meta.get("chosen_config_index", 0))
                plan.put(a.sub, {**_fake_search_record(a.trial, score), **a.meta})
            elif a.trial.row == row:
                plan.put(a.sub, plan.copy(a))

    def total():
        plan = TunedPlan(spec, out)
        plan.start()
        return plan.progress[0]

    plan = TunedPlan(spec, out)
    for _ in range(3):  # the Pop row to its end (its copy file included), the BPR row untouched
        finish(plan, plan.step(), row="Pop")
    assert not [a for a in plan.step() if a.trial.row == "Pop"]
    assert total() == 7
    finish(plan, plan.step())  # BPR's rung 0
    assert total() == 2 + 1
    finish(plan, plan.step())  # its last search stage: seed 1's final trial is then a copy
    assert total() == 1
    finish(plan, plan.step())
    assert total() == 0 and not TunedPlan(spec, out).start()


def test_rung_budgets_never_exceed_the_epoch_cap_and_the_last_stage_runs_to_it(tmp_path):
    space = tmp_path / "lr.hyper"
    space.write_text("learning_rate choice [0.001,0.01,0.05,0.1]\n")
    spec = BenchmarkSpec(models=["BPR"], datasets=["d"], seeds=[1], config={"epochs": 20},
                         tune={"configs": 4, "rungs": [5, 40], "spaces": {"BPR": str(space)}})
    plan = TunedPlan(spec, str(tmp_path))
    trials = [plan._search_trial("BPR", "BPR", "d", (), spec.config, 0, r) for r in range(3)]
    assert [t.config_dict["epochs"] for t in trials] == [5, 20, 20]
    assert [t.id for t in trials] == ["d__BPR__cfg0__r0", "d__BPR__cfg0__r1", "d__BPR__cfg0__r2"]


# --- a tiny tuned run end to end -----------------------------------------------------------------------
def test_tiny_tuned_run_picks_the_best_validation_config_and_resumes_with_nothing_to_do(planted, tmp_path, local_ray):
    from recbole_metammf.benchmark.trial import run_trial
    from recbole_metammf.benchmark.plan import run_tuned
    from recbole_metammf.benchmark.tuned_report import write_tuned_report

    root, name = planted
    conf = _data_yaml(root, name, tmp_path / "data.yaml", epochs=2)
    space = tmp_path / "lr.hyper"
    space.write_text("learning_rate choice [0.0,0.001,0.01,0.05]\n")  # a rate of 0 cannot learn
    row = "BPR-wide"  # a named entry: its own row and trial ids, its config in every trial
    spec = BenchmarkSpec(models=[row], datasets=[name], seeds=[1, 2], config_files=[conf],
                         entries={row: {"model": "BPR", "config": {"embedding_size": 32}}},
                         tune={"configs": 4, "rungs": [1], "eta": 2, "seed": 1, "spaces": {row: str(space)}})
    out = tmp_path / "tuned"
    summary = run_tuned(spec, str(out), progress=False, command="python run_benchmark.py --file tiny.yaml")
    assert not summary["failed"]

    search = {r["trial_id"]: r for r in store.load_trials(str(out), SEARCH)}
    rung0 = {r["config_index"]: r for r in search.values() if r["rung"] == 0}
    last = {r["config_index"]: r for r in search.values() if r["rung"] == 1}
    assert sorted(rung0) == [0, 1, 2, 3] and len(search) == 6
    assert all(r["epochs_run"] == 1 and r["config"]["epochs"] == 1 for r in rung0.values())
    assert all(r["model"] == "BPR" and r["row"] == row and r["config"]["embedding_size"] == 32 for r in search.values())
    assert all(r["config"]["learning_rate"] == r["params"]["learning_rate"] for r in search.values())
    assert {r["params"]["learning_rate"] for r in rung0.values()} == {0.0, 0.001, 0.01, 0.05}
    # the best half of rung 0 went on, and the best of the last stage was chosen, on validation only
    by_score = sorted(rung0, key=lambda k: (-rung0[k]["best_valid_score"], k))
    assert sorted(last) == sorted(by_score[:2])
    chosen = max(last, key=lambda k: (last[k]["best_valid_score"], -k))
    assert last[chosen]["epochs_run"] == 2 and last[chosen]["params"]["learning_rate"] > 0

    finals = {r["seed"]: r for r in store.load_trials(str(out))}
    assert sorted(finals) == [1, 2]
    for seed, r in finals.items():
        assert r["trial_id"] == f"{name}__{row}__seed{seed}" and r["row"] == row and r["stage"] == "final"
        assert r["tuned_params"] == last[chosen]["params"] and r["chosen_config_index"] == chosen
        assert r["config"]["learning_rate"] == last[chosen]["params"]["learning_rate"] and r["config"]["epochs"] == 2
    # seed 1's final trial is the search's own run of the chosen config (copied, same fingerprint)
    source = search[f"{name}__{row}__cfg{chosen}__r1"]
    assert finals[1]["reused_from"] == source["trial_id"] and finals[1]["test_result"] == source["test_result"]
    assert finals[1]["fingerprint"] == source["fingerprint"] and "reused_from" not in finals[2]
    assert summary["reused"] == [finals[1]["trial_id"]] and len(summary["ran"]) == 7

    # the same search trial again, in this process: the same validation curve (what makes reruns pick the same)
    again = run_trial("BPR", name, 1, [conf], {**rung0[by_score[0]]["config_overrides"]})
    assert again["valid_curve"] == rung0[by_score[0]]["valid_curve"]

    md = (out / name / "leaderboard.md").read_text()
    assert "Tuned" in md and "search space" in md and f"| {row} | 2 |" in md
    assert f"| {row} | BPR | 4 | 6 (" in md and f"#{chosen}: learning_rate={last[chosen]['params']['learning_rate']}" in md
    n_last = sum(r["best_epoch"] == r["valid_curve"][-1]["epoch"] for r in finals.values())
    assert f"{n_last} of 2 final trials chose their last validated epoch" in md
    # resume: nothing left to run; the report regenerates from the files alone, identically
    rerun = run_tuned(spec, str(out), progress=False, command="python run_benchmark.py --file tiny.yaml")
    assert rerun["ran"] == [] and rerun["reused"] == [] and len(rerun["skipped"]) == 8
    write_tuned_report(str(out))
    assert (out / name / "leaderboard.md").read_text() == md


def test_killed_tuned_run_resumes_running_every_search_trial_exactly_once(planted, tmp_path):
    root, name = planted
    conf = _data_yaml(root, name, tmp_path / "data.yaml", epochs=1)
    bench = tmp_path / "tuned.yaml"
    bench.write_text(yaml.safe_dump({
        "models": ["BPR"], "datasets": [name], "seeds": [5, 6], "config_files": [conf],
        "tune": {"configs": 3, "seed": 5, "spaces": {"BPR": {"learning_rate": [0.001, 0.01, 0.05]}}}}))
    out = tmp_path / "results" / "tuned"
    # two cores per trial: one trial at a time, so the first file appears while the others are unfinished
    cmd = [sys.executable, str(REPO / "run_benchmark.py"), "--file", str(bench), "--out", str(out),
           "--cpus-per-trial", "2"]
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    search_dir = out / SEARCH
    try:
        deadline = time.time() + 300
        # a finished file, not the hidden temporary one it is written to first (pathlib's * matches it too)
        while time.time() < deadline and not (search_dir.is_dir() and any(
                not p.name.startswith(".") for p in search_dir.glob("*.json"))):
            assert proc.poll() is None, "the run ended before it could be interrupted"
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)  # kill -9 of the driver, mid-search
        proc.wait(timeout=30)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    before = {p.name: p.read_bytes() for p in search_dir.glob("*.json") if not p.name.startswith(".")}
    assert 1 <= len(before) < 3 and not (out / "trials").exists()
    assert not list(search_dir.glob(".tmp-*"))
    assert json.loads((out / "benchmark.json").read_text())["mode"] == "tuned"

    import run_benchmark

    summary = run_benchmark.main(["--file", str(bench), "--out", str(out)])
    search_ids = sorted(f"{name}__BPR__cfg{k}__r0" for k in range(3))
    final_ids = [f"{name}__BPR__seed5", f"{name}__BPR__seed6"]
    assert sorted(summary["skipped"]) == sorted(n[:-5] for n in before)
    ran_search = [t for t in summary["ran"] if "__cfg" in t]
    assert sorted(ran_search + summary["skipped"]) == search_ids  # every search trial exactly once
    assert len(ran_search) == len(set(ran_search))
    assert summary["reused"] == [f"{name}__BPR__seed5"] and [t for t in summary["ran"] if "__seed" in t] == final_ids[1:]
    assert sorted(p.name[:-5] for p in search_dir.glob("*.json")) == search_ids
    assert all((search_dir / f).read_bytes() == b for f, b in before.items())  # finished ones untouched
    assert sorted(p.name[:-5] for p in (out / "trials").glob("*.json")) == final_ids

    md = (out / name / "leaderboard.md").read_text()
    again = run_benchmark.main(["--file", str(bench), "--out", str(out)])  # nothing left to run
    assert again["ran"] == [] and len(again["skipped"]) == 5
    run_benchmark.main(["--report", str(out)])
    assert (out / name / "leaderboard.md").read_text() == md


# --- the report's statements ---------------------------------------------------------------------------
def _final(row, seed, ndcg, best_epoch, last_epoch, params, chosen, time_s, reused=None, dataset="toy"):
    curve = [{"epoch": e, "score": ndcg, "result": {}} for e in range(last_epoch + 1)]
    r = {"trial_id": f"{dataset}__{row}__seed{seed}", "model": "M" if row == "M-x" else row, "dataset": dataset,
         "seed": seed, "status": "ok", "valid_metric": "NDCG@10", "best_epoch": best_epoch,
         "best_valid_result": {"ndcg@10": ndcg}, "test_result": {"ndcg@10": ndcg, "recall@10": ndcg},
         "valid_curve": curve, "train_time_s": 1.0, "valid_time_s": 0.1, "test_time_s": 0.1, "total_time_s": time_s,
         "peak_memory_mb": 100.0, "model_params": {}, "training": {"epochs": 300, "eval_step": 1, "stopping_step": 20},
         "protocol": {"eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "mode": "full"}, "metrics": ["NDCG", "Recall"],
                      "topk": [10], "valid_metric": "NDCG@10"},
         "dataset_stats": {"n_users": 10, "n_items": 20, "n_interactions": 100, "density": 0.5,
                           "split_interactions": [80, 10, 10], "item_features": {}},
         "versions": {"python": "3", "torch": "t", "recbole": "r", "recbole_metammf": "m"},
         "stage": "final", "row": row, "tuned_params": params, "chosen_config_index": chosen,
         "chosen_from": f"{dataset}__{row}__cfg{chosen}__r0", "space": "learning_rate in {0.001, 0.01}",
         "space_source": f"hyper/{row}.hyper", "cpus_per_trial": 1}
    if reused:
        r["reused_from"] = reused
    return r


def test_tuned_report_states_space_configs_choice_time_and_last_epoch_count(tmp_path):
    from recbole_metammf.benchmark.tuned_report import write_tuned_report

    rows = {"A": {"learning_rate": 0.01}, "M-x": {"learning_rate": 0.001}}
    for row, params in rows.items():
        for k, lr in enumerate([0.001, 0.01]):
            rec = {"trial_id": f"toy__{row}__cfg{k}__r0", "model": "M" if row == "M-x" else row, "row": row,
                   "dataset": "toy", "seed": 2020, "status": "ok", "best_valid_score": 0.1 + 0.1 * (lr == params["learning_rate"]),
                   "best_epoch": 3, "epochs_run": 14, "total_time_s": 600.0, "config_index": k, "rung": 0,
                   "epoch_budget": None, "params": {"learning_rate": lr}, "stage": "search",
                   "space": "learning_rate in {0.001, 0.01}", "space_source": f"hyper/{row}.hyper",
                   "config": {"valid_metric_bigger": True}, "cpus_per_trial": 1}
            _save_search(tmp_path, rec)
    chosen = {"A": 1, "M-x": 0}
    # A: 3 finals, 2 chose their last epoch (seed 2020's is the search's own run: its time not counted again)
    finals = [_final("A", 2020, 0.30, 99, 99, rows["A"], 1, 600.0, reused="toy__A__cfg1__r0"),
              _final("A", 2021, 0.31, 299, 299, rows["A"], 1, 900.0),
              _final("A", 2022, 0.29, 40, 50, rows["A"], 1, 300.0),
              _final("M-x", 2020, 0.20, 10, 20, rows["M-x"], 0, 600.0, reused="toy__M-x__cfg0__r0"),
              _final("M-x", 2021, 0.21, 12, 22, rows["M-x"], 0, 60.0),
              _final("M-x", 2022, 0.22, 11, 21, rows["M-x"], 0, 60.0)]
    for r in finals:
        store.save_trial(str(tmp_path), r)
    spec = BenchmarkSpec(models=["A", "M-x"], datasets=["toy"], seeds=[2020, 2021, 2022],
                         entries={"M-x": {"model": "M", "config": {}}}, tune={"configs": 2})
    store.save_manifest(str(tmp_path), {"mode": "tuned", "command": "python run_benchmark.py --file t.yaml",
                                        "spec": spec.to_dict(), "tune": {"configs": 2, "rungs": [], "eta": 2,
                                                                         "seed": 2020, "max_last_epoch_share": 0.2}})
    write_tuned_report(str(tmp_path))
    md = (tmp_path / "toy" / "leaderboard.md").read_text()
    assert "tuned" in md and "search space" in md and "## Tuning" in md
    assert "2 of 6 final trials chose their last validated epoch; the rule is at most 20% of them (**not met**" in md
    a = [line for line in md.splitlines() if line.startswith("| A | A |")][0]
    m = [line for line in md.splitlines() if line.startswith("| M-x | M |")][0]
    # configs tried, search trials (epochs), chosen config, its validation score, search / final wall time, finals
    assert a == "| A | A | 2 | 2 (28) | #1: learning_rate=0.01 | 0.2000 | 20.0 min | 20.0 min | 3 (2) |"
    assert m == "| M-x | M | 2 | 2 (28) | #0: learning_rate=0.001 | 0.2000 | 20.0 min | 2.0 min | 3 (0) |"
    assert "* **A** (`hyper/A.hyper`): learning_rate in {0.001, 0.01}" in md
    assert "\n| A | 3 | " in md and "\n| M-x | 3 | " in md  # the leaderboard's own rows
    # each final's longest pre-best plateau (the finals ran at patience 20, so against RecBole's 10)
    assert "## Patience" in md and "| M-x | 3 | 0, 0, 0 | 0 | 0 |" in md and "A patience of 10 would" in md
    search_md = (tmp_path / "toy" / "search.md").read_text()
    assert "| #1: learning_rate=0.01 | 0.2000 |" in search_md and "| #0: learning_rate=0.001 | 0.1000 |" in search_md
    assert (tmp_path / "toy" / "search.csv").read_text().count("\n") == 5

    # a relaxed board (no rule) says so instead
    manifest = store.load_manifest(str(tmp_path))
    manifest["tune"]["max_last_epoch_share"] = None
    store.save_manifest(str(tmp_path), manifest)
    write_tuned_report(str(tmp_path))
    assert "no convergence rule on this board" in (tmp_path / "toy" / "leaderboard.md").read_text()


def _save_search(out_dir, record):
    store.atomic_write_text(os.path.join(out_dir, SEARCH, record["trial_id"] + ".json"), json.dumps(record))
