"""The published-figures section of a leaderboard: values, ratios, labels and bad input."""

from __future__ import annotations

import csv
import io

import pytest

from recbole_metammf.benchmark.published import check_published, csv_text, markdown

SUMMARY = {"models": ["LightGCN", "BPR", "MetaMMF_GCN"],
           "table": {"LightGCN": {"recall@20": (0.0930, 0.0010), "ndcg@20": (0.0450, 0.0005)},
                     "BPR": {"recall@20": (0.0460, 0.0020), "ndcg@20": (0.0190, 0.0001)},
                     "MetaMMF_GCN": {"recall@20": (0.0500, 0.0030), "ndcg@20": (0.0200, 0.0002)}}}
PUBLISHED = check_published({
    "source": "DiffMM (Jiang et al., ACM MM 2024), Table 1",
    "differences": "they exclude training items only",
    "datasets": {"tt": {"BPR": {"Recall@20": 0.0346, "NDCG@20": 0.0130},
                        "LightGCN": {"recall@20": 0.0653, "ndcg@20": 0.0282},
                        "DiffMM": {"recall@20": 0.1129, "ndcg@20": 0.0456}}}}, "bench.yaml")


def test_markdown_puts_ours_beside_published_with_ratio():
    lines = markdown(SUMMARY, PUBLISHED, "tt")
    text = "\n".join(lines)
    assert "Published (not run here): DiffMM (Jiang et al., ACM MM 2024), Table 1." in text
    assert "they exclude training items only" in text
    assert "| Model | R@20 ours | R@20 **published** | ours / published | NDCG@20 ours |" in text
    # ours first (the published ones in leaderboard order), then models only the source has
    rows = [ln for ln in lines if ln.startswith("| ") and not ln.startswith("| Model")]
    assert [r.split(" | ")[0][2:] for r in rows] == ["LightGCN", "BPR", "MetaMMF_GCN", "DiffMM"]
    assert rows[1] == "| BPR | 0.0460 ± 0.0020 | 0.0346 | 1.33 | 0.0190 ± 0.0001 | 0.0130 | 1.46 |"
    assert rows[2] == "| MetaMMF_GCN | 0.0500 ± 0.0030 | — | — | 0.0200 ± 0.0002 | — | — |"
    assert rows[3] == "| DiffMM | — | 0.1129 | — | — | 0.0456 | — |"
    assert markdown(SUMMARY, PUBLISHED, "other-dataset") == []


def test_csv_has_one_row_per_model_and_metric():
    rows = list(csv.reader(io.StringIO(csv_text(SUMMARY, PUBLISHED, "tt"))))
    assert rows[0] == ["model", "metric", "ours_mean", "ours_std", "published"]
    assert ["LightGCN", "R@20", "0.093000", "0.001000", "0.0653"] in rows
    assert ["DiffMM", "NDCG@20", "", "", "0.0456"] in rows
    assert len(rows) == 1 + 4 * 2


@pytest.mark.parametrize("bad,message", [
    ({"source": "x"}, "needs a 'datasets' mapping"),
    ({"datasets": {}, "url": "x"}, "unknown keys under 'published'"),
    ({"datasets": {"tt": {"BPR": {"recall": 0.1}}}}, "must map metric@K to a number"),
    ({"datasets": {"tt": {"BPR": {"recall@20": "high"}}}}, "must map metric@K to a number"),
])
def test_bad_published_mapping_is_one_clear_error(bad, message):
    with pytest.raises(ValueError, match=message):
        check_published(bad, "bench.yaml")


def test_chart_is_written(tmp_path):
    from recbole_metammf.benchmark.published import chart

    chart(SUMMARY, PUBLISHED, "tt", str(tmp_path / "p.png"))
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
