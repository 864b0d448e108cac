"""Choosing a default on validation as one mechanism (recbole_metammf/benchmark/select.py): the rule, and
the committed selection pages being exactly what the mechanism writes from the committed trial files."""

from __future__ import annotations

import os

import pytest

from conftest import REPO
from recbole_metammf.benchmark.select import choose, load_selection, write_selection_report


def test_the_rule_keeps_the_incumbent_unless_beaten_by_the_margin_and_ties_go_where_it_says():
    keep = {"margin": 0.02, "ties": "incumbent"}
    assert choose({"a": 0.90, "b": 0.919}, "a", keep)[0] == "a"         # within the margin: the incumbent stays
    assert choose({"a": 0.90, "b": 0.921}, "a", keep)[0] == "b"
    assert choose({"a": 0.90, "b": 0.95}, None, keep)[0] == "b"          # no incumbent: the highest
    assert choose({"a": 0.90, "b": 0.95}, "c", keep)[0] == "b"           # an incumbent that was not run
    chosen, top, why = choose({"a": 0.90, "b": 0.91, "c": 0.905}, "a", keep)
    assert (chosen, top) == ("a", "b") and "the incumbent stays" in why
    narrow = {"margin": 0, "ties": "challenger"}                          # "not lower than" the incumbent's
    assert choose({"d_in": 0.5, "64": 0.5}, "d_in", narrow)[0] == "64"
    assert choose({"d_in": 0.5, "64": 0.4999}, "d_in", narrow)[0] == "d_in"
    hits = {"margin": 1, "ties": "incumbent"}                             # cold_item_id: one hit is noise
    assert choose({"none": 177, "zero": 178, "mean": 178}, "none", hits)[:2] == ("none", "zero")
    assert choose({"none": 228, "zero": 243, "mean": 244}, "none", hits)[:2] == ("mean", "mean")
    assert choose({"none": 10, "zero": 12, "mean": 12}, "none", hits)[:2] == ("zero", "zero")  # ties: listed first


@pytest.mark.parametrize("name", ["content_reg", "meta_hidden", "cold_item_id"])
def test_each_committed_selection_page_is_what_the_mechanism_writes_from_the_trial_files(name, tmp_path):
    sel = load_selection(str(REPO / "benchmarks" / "selection" / f"{name}.yaml"))
    committed = open(sel["page"]).read()
    sel["page"] = str(tmp_path / "page.md")
    assert write_selection_report(sel) == committed
    assert open(sel["page"]).read() == committed


def test_the_pages_say_what_was_chosen_and_why():
    pages = {n: open(REPO / "benchmarks" / f"{n}_validation.md").read()
             for n in ("content_reg", "meta_hidden", "cold_item_id")}
    assert "* **MetaMMF_MF**: `content_reg_weight` = **1** (the incumbent 1 is the highest" in pages["content_reg"]
    assert "* **MetaMMF_GCN**: `meta_hidden_size` = **64** (64 (0.993) is at least as high as the incumbent d_in's " \
           "(0.985))" in pages["meta_hidden"]
    assert ("* **LATTICE**: `cold_item_id` = **none** (checkpoint rule: mean (mean (244) is higher by more than 1 "
            "than the incumbent none's (228)); overruled end to end") in pages["cold_item_id"]


def test_a_selection_file_with_a_bad_rule_is_one_clear_error(tmp_path):
    from recbole_metammf.errors import ConfigError

    bad = tmp_path / "sel.yaml"
    bad.write_text("select: {setting: x, page: p.md, models: [BPR], candidates: {a: {folders: [a]}},"
                   " groups: [{datasets: [d]}], rule: {incumbent: a, ties: sometimes}}\n")
    with pytest.raises(ConfigError, match=f"{os.path.basename(bad)}.*rule.ties"):
        load_selection(str(bad))
