"""compat.py section 8: training batches without the item feature columns (``batch_item_features: False``)
are RecBole's batches minus those columns, and training on them gives the same model."""

from __future__ import annotations

import torch

from conftest import build_model


def _batches(config, train):
    from recbole.utils import init_seed

    init_seed(config["seed"], True)  # the loader's shuffle and the sampler draw from the global generators
    return [batch for batch in train]


def _train_one_epoch(config, net, train):
    from recbole.trainer import Trainer
    from recbole.utils import init_seed

    init_seed(config["seed"], True)
    trainer = Trainer(config, net)
    loss = trainer._train_epoch(train, 0, show_progress=False)
    return loss, {k: v.detach().clone() for k, v in net.state_dict().items()}


def test_batches_keep_rows_and_negatives_and_drop_only_item_feature_columns(planted):
    from recbole_metammf.compat import skips_item_join

    root, name = planted
    config, _, lean, _ = build_model("VBPR", root, name)  # the default: False
    lean_batches = _batches(config, lean)
    config, _, full, _ = build_model("VBPR", root, name, batch_item_features=True)
    full_batches = _batches(config, full)
    assert skips_item_join(lean) and not skips_item_join(full)
    assert len(lean_batches) == len(full_batches) > 1
    item_columns = {"visual", "audio", "tags"}
    for a, b in zip(lean_batches, full_batches):
        assert set(a.columns) == {"user_id", "item_id", "neg_item_id"}
        assert set(b.columns) == {"user_id", "item_id", "neg_item_id"} | item_columns | {f"neg_{c}" for c in item_columns}
        for column in ("user_id", "item_id", "neg_item_id"):  # the same rows and the same sampled negatives
            assert torch.equal(a[column], b[column])


def test_training_on_lean_batches_gives_the_same_model(planted):
    root, name = planted
    results = []
    for join in (False, True):
        config, net, train, _ = build_model("VBPR", root, name, batch_item_features=join)
        results.append(_train_one_epoch(config, net, train))
    (loss_a, state_a), (loss_b, state_b) = results
    assert loss_a == loss_b
    assert state_a.keys() == state_b.keys() and all(torch.equal(state_a[k], state_b[k]) for k in state_a)


def test_a_recbole_general_model_gets_lean_batches_too_and_evaluation_loaders_are_untouched(planted):
    from recbole_metammf.compat import skips_item_join

    root, name = planted
    _, _, train, test = build_model("BPR", root, name)
    assert skips_item_join(train) and not skips_item_join(test)
    assert "visual" not in next(iter(train)).columns
