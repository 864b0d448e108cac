"""The paper's HR@K as a RecBole metric.

The MetaMMF paper (and the MMGCN line of work it follows) reports "HR@K" as
the *total* number of test items found in the users' top-K lists divided by
the *total* number of test items: a micro-averaged recall. RecBole's ``Hit`` is
something else (the share of users with at least one hit), so this metric is
registered under its own name, ``HR``, and reported as ``hr@K``.

    HR@K = sum_u |top_K(u) ∩ test(u)| / sum_u |test(u)|
"""

import numpy as np

from recbole.evaluator import register as recbole_register
from recbole.evaluator.base_metric import TopkMetric


class HR(TopkMetric):
    r"""Micro-averaged recall: total hits over total test interactions."""

    def calculate_metric(self, dataobject):
        pos_index, pos_len = self.used_info(dataobject)  # [n_users, max_k] bool, [n_users]
        hits = np.cumsum(pos_index, axis=1).sum(axis=0)  # [max_k] total hits at each cut-off
        total = max(int(pos_len.sum()), 1)
        return {f"hr@{k}": round(float(hits[k - 1]) / total, self.decimal_place) for k in self.topk}


PLUGIN_METRICS = {"hr": HR}


def register_metrics() -> None:
    """Add the plugin metrics to RecBole's metric tables (shared dicts)."""
    for name, cls in PLUGIN_METRICS.items():
        recbole_register.metrics_dict[name] = cls
        recbole_register.metric_information[name] = cls.metric_need
        recbole_register.metric_types[name] = cls.metric_type
        if cls.smaller and name not in recbole_register.smaller_metrics:
            recbole_register.smaller_metrics.append(name)
