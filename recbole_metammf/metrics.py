"""The paper's HR@K as a RecBole metric.

The MetaMMF paper (and the MMGCN line of work it follows) reports "HR@K" as
the *total* number of test items found in the users' top-K lists divided by
the *total* number of test items: a micro-averaged recall. RecBole's ``Hit`` is
something else (the share of users with at least one hit), so this metric is
registered under its own name, ``HR``, and reported as ``hr@K``.

    HR@K = sum_u |top_K(u) ∩ test(u)| / sum_u |test(u)|

Cold-item metrics, ``ColdRecall`` and ``ColdNDCG`` (reported as ``coldrecall@K``,
``coldndcg@K``): a *cold* item has no training interaction. The ranking is the usual full
ranking (all items but the user's known ones); only the user's cold items of the evaluated
split count as relevant, and the average runs over the users who have at least one:

    ColdRecall@K = mean_{u: C(u) != {}} |top_K(u) ∩ C(u)| / |C(u)|,   C(u) = test(u) ∩ cold
    ColdNDCG@K   = the same users' NDCG@K with C(u) as the relevant set (IDCG over min(|C(u)|, K))

When no user of the split has a cold item the metrics report nothing (no key), rather than
a number that would read as a result; so does an evaluation that never saw the training split
(``Trainer.evaluate`` without ``fit``, with a logged warning). Their data comes with RecBole's evaluation pass (no
extra scoring): ``compat.py`` section 6 adds two entries to RecBole's evaluation collector,
``data.cold_items`` (the training item counts, taken where RecBole's ``Trainer.fit`` collects
``data.count_items``) and ``rec.cold_topk`` (built per batch by :func:`cold_topk`, beside
RecBole's ``rec.topk``).
"""

import numpy as np
import torch

from recbole.evaluator import register as recbole_register
from recbole.evaluator.base_metric import TopkMetric


class HR(TopkMetric):
    r"""Micro-averaged recall: total hits over total test interactions."""

    def calculate_metric(self, dataobject):
        pos_index, pos_len = self.used_info(dataobject)  # [n_users, max_k] bool, [n_users]
        hits = np.cumsum(pos_index, axis=1).sum(axis=0)  # [max_k] total hits at each cut-off
        total = max(int(pos_len.sum()), 1)
        return {f"hr@{k}": round(float(hits[k - 1]) / total, self.decimal_place) for k in self.topk}


def cold_items_mask(item_counts, n_items: int) -> torch.Tensor:
    """[n_items] bool: True for the items with no training interaction (never the padding item 0).

    ``item_counts``: RecBole's ``dataset.item_counter`` of the training split (item id -> count).
    """
    seen = torch.zeros(n_items, dtype=torch.bool)
    ids = [i for i, c in item_counts.items() if c > 0]
    if ids:
        seen[torch.as_tensor(ids, dtype=torch.long)] = True
    seen[0] = True  # padding
    return ~seen


def cold_topk(scores: torch.Tensor, positive_u: torch.Tensor, positive_i: torch.Tensor, cold: torch.Tensor, k: int):
    """Per user: which of the top-``k`` items are cold relevant items, and how many cold relevant items there are.

    ``scores`` [n_users, n_items] (known items already at -inf, as RecBole's full sort leaves them),
    ``positive_u`` / ``positive_i`` the (row, item) pairs of the split's interactions, ``cold`` [n_items]
    bool. Returns [n_users, k + 1] ints: ``k`` hit indicators in rank order, then ``|C(u)|``; the layout
    of RecBole's ``rec.topk`` with only the cold items counted.
    """
    _, topk_idx = torch.topk(scores, k, dim=-1)  # [n_users, k], the same call as RecBole's rec.topk
    keep = cold.to(positive_i.device)[positive_i]
    relevant = torch.zeros_like(scores, dtype=torch.int)  # [n_users, n_items]
    relevant[positive_u[keep], positive_i[keep]] = 1
    n_cold = relevant.sum(dim=1, keepdim=True)  # [n_users, 1]
    return torch.cat([torch.gather(relevant, 1, topk_idx), n_cold], dim=1)


class _ColdTopkMetric(TopkMetric):
    metric_need = ["rec.cold_topk", "data.cold_items"]

    def used_info(self, dataobject):
        """(hit indicators [m, max_k] bool, |C(u)| [m]) of the m users with at least one cold item."""
        if "rec.cold_topk" not in dataobject:  # not collected (evaluate() without fit(): see compat.py section 6)
            return np.zeros((0, max(self.topk)), dtype=bool), np.zeros(0, dtype=np.int64)
        rec = dataobject.get("rec.cold_topk")
        hits, n_cold = torch.split(rec, [max(self.topk), 1], dim=1)
        n_cold = n_cold.squeeze(-1)
        users = n_cold > 0
        return hits[users].to(torch.bool).numpy(), n_cold[users].numpy()


class ColdRecall(_ColdTopkMetric):
    r"""Recall@K over each user's cold relevant items, averaged over users who have one."""

    def calculate_metric(self, dataobject):
        hits, n_cold = self.used_info(dataobject)
        if len(n_cold) == 0:
            return {}
        return self.topk_result("coldrecall", np.cumsum(hits, axis=1) / n_cold.reshape(-1, 1))


class ColdNDCG(_ColdTopkMetric):
    r"""NDCG@K with each user's cold relevant items as the relevant set, averaged over users who have one."""

    def calculate_metric(self, dataobject):
        hits, n_cold = self.used_info(dataobject)
        if len(n_cold) == 0:
            return {}
        ranks = np.arange(1, hits.shape[1] + 1)
        gains = 1.0 / np.log2(ranks + 1)  # [max_k]
        dcg = np.cumsum(np.where(hits, gains, 0.0), axis=1)
        ideal = np.cumsum(gains)  # ideal[j] = IDCG with j + 1 relevant items ranked first
        # IDCG@K uses min(|C(u)|, K) relevant positions
        idcg = ideal[np.minimum(n_cold.reshape(-1, 1), ranks) - 1]  # [m, max_k]
        return self.topk_result("coldndcg", dcg / idcg)


PLUGIN_METRICS = {"hr": HR, "coldrecall": ColdRecall, "coldndcg": ColdNDCG}


def register_metrics() -> None:
    """Add the plugin metrics to RecBole's metric tables (shared dicts)."""
    for name, cls in PLUGIN_METRICS.items():
        recbole_register.metrics_dict[name] = cls
        recbole_register.metric_information[name] = cls.metric_need
        recbole_register.metric_types[name] = cls.metric_type
        if cls.smaller and name not in recbole_register.smaller_metrics:
            recbole_register.smaller_metrics.append(name)
