"""Recommendations out of a saved checkpoint: top-K lists, embeddings, an optional faiss index.

    python -m recbole_metammf.export --checkpoint saved/MODEL-TIME-PID.pth --out DIR --topk 20 \\
        [--exclude all|train+valid|train] [--index]

Works for any general recommender the plugin or RecBole trains (a model with
``full_sort_predict``, or ``predict`` as RecBole's own fallback). Writes

* ``DIR/topk.csv``: ``user_id,rank,item_id,score`` with the dataset's own ids, for every
  user with a training interaction, ranks 1..K by descending score. The user's known items
  are never recommended: with ``--exclude all`` (default) the items of their training,
  validation and test interactions (serving recommends what the user has not seen),
  ``train+valid`` what RecBole's test ranking excludes, ``train`` the training items only.
  The padding item is never ranked; a user with fewer than K rankable items gets fewer rows.
* ``DIR/user_embeddings.npy`` / ``DIR/item_embeddings.npy`` (float32, one row per user / item
  of the dataset) with ``DIR/user_ids.txt`` / ``DIR/item_ids.txt`` (row n is the id on line n),
  when the model has vectors whose inner product is its score: the plugin's models' final
  representations, a model whose ``forward()`` returns all users' and all items' vectors
  (LightGCN, NGCF, ...), or ``user_embedding`` / ``item_embedding`` tables (BPR). The vectors
  are checked against the model's own scores before they are written; a model whose score is
  not an inner product (NeuMF, ...) gets no embedding files.
* with ``--index`` (needs the optional ``faiss-cpu``): ``DIR/item_index.faiss``, an exact
  inner-product index (``IndexFlatIP``) of the item vectors, row order of ``item_ids.txt``;
  ``faiss.read_index`` + ``index.search(user_vectors, K)`` serve top-K without the exclusion.

Known items are looked up in the split the checkpoint's config rebuilds (RecBole's own
``load_data_and_model``), so the lists match what the model was evaluated on.
"""

from __future__ import annotations

import argparse
import inspect as _pyinspect
import os
import sys

import numpy as np
import scipy.sparse as sp
import torch

from recbole_metammf.checkpoint import load_checkpoint
from recbole_metammf.entry import run_cli
from recbole_metammf.errors import UserError

EXCLUDE = ("all", "train+valid", "train")


class ExportError(UserError, ValueError):
    """Bad export arguments or a model the export cannot serve; the message says which."""


def check_model_type(checkpoint: str, config) -> None:
    """Only general recommenders rank items for a user id alone (sequential / context models need more input)."""
    from recbole.utils import ModelType

    kind = config["MODEL_TYPE"]
    if kind not in (ModelType.GENERAL, ModelType.TRADITIONAL):
        raise ExportError(
            f"{checkpoint}: holds {config['model']}, a {getattr(kind, 'name', kind).lower()} model; export serves "
            "general recommenders, which rank the items for a user id alone"
        )


# --- what a user already knows -------------------------------------------------------------------
def known_items(loaded, exclude: str = "all") -> sp.csr_matrix:
    """[n_users, n_items] 0/1 CSR: the items each user is not recommended under ``exclude``."""
    if exclude not in EXCLUDE:
        raise ExportError(f"exclude must be one of {EXCLUDE}, got '{exclude}'")
    splits = [loaded.train_data]
    if exclude in ("all", "train+valid"):
        splits.append(loaded.valid_data)
    if exclude == "all":
        splits.append(loaded.test_data)
    known = sum(split.dataset.inter_matrix(form="csr") for split in splits)
    known = sp.csr_matrix(known)
    known.data[:] = 1
    return known


def training_users(loaded) -> np.ndarray:
    """Internal ids of the users with at least one training interaction, ascending."""
    counts = np.asarray(loaded.train_data.dataset.inter_matrix(form="csr").sum(axis=1)).ravel()
    return np.flatnonzero(counts > 0)


# --- scores ---------------------------------------------------------------------------------------
@torch.no_grad()
def score_users(model, dataset, users: np.ndarray, device) -> torch.Tensor:
    """Every item's score for ``users``: [len(users), n_items] (as RecBole's full-sort evaluation)."""
    from recbole.data.interaction import Interaction

    uid = torch.as_tensor(users, dtype=torch.long)
    n_items = dataset.item_num
    inter = Interaction({dataset.uid_field: uid}).to(device)
    try:
        scores = model.full_sort_predict(inter)
    except NotImplementedError:  # RecBole's fallback: predict() on every (user, item) pair
        pairs = Interaction(
            {
                dataset.uid_field: uid.repeat_interleave(n_items),
                dataset.iid_field: torch.arange(n_items).repeat(len(uid)),
            }
        ).to(device)
        scores = model.predict(pairs)
    return scores.view(len(uid), n_items).float()


@torch.no_grad()
def top_k(model, dataset, users: np.ndarray, known: sp.csr_matrix, k: int, device, batch_users: int):
    """(scores [n, k], items [n, k]) of ``users``, known items and padding excluded (score -inf)."""
    all_scores, all_items = [], []
    k = min(k, dataset.item_num)
    for start in range(0, len(users), batch_users):
        batch = users[start : start + batch_users]
        scores = score_users(model, dataset, batch, device)  # [b, n_items]
        scores[:, 0] = -np.inf  # padding item
        rows = known[batch].tocoo()
        scores[torch.as_tensor(rows.row, dtype=torch.long), torch.as_tensor(rows.col, dtype=torch.long)] = -np.inf
        values, items = torch.topk(scores, k, dim=-1)  # [b, k]
        all_scores.append(values.cpu())
        all_items.append(items.cpu())
    return torch.cat(all_scores).numpy(), torch.cat(all_items).numpy()


# --- embeddings -----------------------------------------------------------------------------------
@torch.no_grad()
def candidate_embeddings(model):
    """(users [n_users, d], items [n_items, d]) that the model may score by inner product, or None."""
    n_users, n_items = model.n_users, model.n_items
    if hasattr(model, "_eval_tensors"):  # the plugin's models: cached final representations
        return model._eval_tensors()
    forward_params = [
        p for p in _pyinspect.signature(model.forward).parameters.values()
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    if not forward_params:  # LightGCN, NGCF, ...: forward() gives every user's and item's vector
        try:
            out = model.forward()
        except Exception:  # noqa: BLE001  (a forward of another shape: try the tables)
            out = None
        if (
            isinstance(out, (tuple, list)) and len(out) == 2 and all(torch.is_tensor(t) for t in out)
            and out[0].dim() == 2 and out[0].shape[0] == n_users
            and out[1].dim() == 2 and out[1].shape[0] == n_items and out[0].shape[1] == out[1].shape[1]
        ):
            return out[0], out[1]
    user_table, item_table = getattr(model, "user_embedding", None), getattr(model, "item_embedding", None)
    if isinstance(user_table, torch.nn.Embedding) and isinstance(item_table, torch.nn.Embedding):
        if user_table.embedding_dim == item_table.embedding_dim:  # BPR
            return user_table.weight, item_table.weight
    return None


def embeddings(model, dataset, device, check_users: int = 64):
    """Float32 numpy (users, items) whose inner product reproduces the model's scores, or None."""
    pair = candidate_embeddings(model)
    if pair is None:
        return None
    users_e, items_e = (t.detach().float() for t in pair)
    probe = np.arange(1, min(dataset.user_num, check_users + 1))
    if len(probe):
        expected = score_users(model, dataset, probe, device)  # [p, n_items]
        got = users_e[torch.as_tensor(probe, device=users_e.device)] @ items_e.t()
        scale = expected.abs().max().clamp_min(1e-6)
        if not torch.allclose(got.to(expected.device), expected, rtol=1e-4, atol=1e-5 * float(scale)):
            return None
    return users_e.cpu().numpy(), items_e.cpu().numpy()


def write_faiss_index(items: np.ndarray, path: str) -> None:
    import faiss

    index = faiss.IndexFlatIP(items.shape[1])
    index.add(np.ascontiguousarray(items, dtype=np.float32))
    faiss.write_index(index, path)


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


# --- the export -----------------------------------------------------------------------------------
def _write_ids(path: str, tokens) -> None:
    with open(path, "w") as f:
        f.writelines(f"{t}\n" for t in tokens)


def export(
    checkpoint: str,
    out: str,
    topk: int = 20,
    exclude: str = "all",
    index: bool = False,
    batch_users: int | None = None,
) -> dict:
    """Write the files described in the module docstring; returns what was written."""
    if topk < 1:
        raise ExportError(f"--topk must be at least 1, got {topk}")
    if exclude not in EXCLUDE:
        raise ExportError(f"exclude must be one of {EXCLUDE}, got '{exclude}'")
    if index and not faiss_available():
        raise ExportError("--index needs faiss-cpu (the optional extra): pip install faiss-cpu")
    if os.path.exists(out) and not os.path.isdir(out):
        raise ExportError(f"{out}: exists and is not a directory")
    loaded = load_checkpoint(checkpoint)
    model, dataset, config = loaded.model, loaded.dataset, loaded.config
    check_model_type(checkpoint, config)
    device = config["device"]
    os.makedirs(out, exist_ok=True)

    users = training_users(loaded)
    known = known_items(loaded, exclude)
    if batch_users is None:  # the evaluation's batch, counted in scores (properties/overall.yaml)
        batch_users = max(1, int(config["eval_batch_size"]) // max(1, dataset.item_num))
    scores, items = top_k(model, dataset, users, known, topk, device, batch_users)

    user_tokens = dataset.id2token(dataset.uid_field, users)
    item_tokens = dataset.id2token(dataset.iid_field, np.arange(dataset.item_num))
    rows = 0
    with open(os.path.join(out, "topk.csv"), "w") as f:
        f.write("user_id,rank,item_id,score\n")
        for u, token in enumerate(user_tokens):
            valid = np.isfinite(scores[u])
            for rank, (item, score) in enumerate(zip(items[u][valid], scores[u][valid]), start=1):
                f.write(f"{token},{rank},{item_tokens[item]},{float(score):.9g}\n")
                rows += 1
    written = {"topk.csv": rows, "users": len(users)}

    vectors = embeddings(model, dataset, device)
    if vectors is not None:
        user_e, item_e = vectors
        np.save(os.path.join(out, "user_embeddings.npy"), user_e[1:])  # row 0 is RecBole's padding
        np.save(os.path.join(out, "item_embeddings.npy"), item_e[1:])
        _write_ids(os.path.join(out, "user_ids.txt"), dataset.id2token(dataset.uid_field, np.arange(1, dataset.user_num)))
        _write_ids(os.path.join(out, "item_ids.txt"), item_tokens[1:])
        written["embeddings"] = (user_e.shape[1], dataset.user_num - 1, dataset.item_num - 1)
    if index:
        if vectors is None:
            raise ExportError(
                f"{checkpoint}: --index needs item vectors whose inner product is the score; "
                f"{config['model']} has none (topk.csv is written)"
            )
        write_faiss_index(vectors[1][1:], os.path.join(out, "item_index.faiss"))
        written["item_index.faiss"] = dataset.item_num - 1
    return written


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m recbole_metammf.export",
        description="Top-K recommendations (dataset ids), embeddings and an optional faiss index from a checkpoint.",
    )
    p.add_argument("--checkpoint", required=True, help="a checkpoint RecBole saved (saved/MODEL-TIME-PID.pth)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--topk", type=int, default=20, help="recommendations per user (default 20)")
    p.add_argument(
        "--exclude", choices=EXCLUDE, default="all",
        help="known items never recommended: all = training, validation and test (default), "
        "train+valid = what RecBole's test ranking excludes, train = training only",
    )
    p.add_argument("--index", action="store_true", help="also write a faiss inner-product index (needs faiss-cpu)")
    p.add_argument("--batch-users", type=int, default=None, help="users scored at once (default: eval_batch_size / items)")
    return p


def _main(argv) -> None:
    args = build_parser().parse_args(argv)
    written = export(args.checkpoint, args.out, args.topk, args.exclude, args.index, args.batch_users)
    print(f"{args.out}/topk.csv: {written['topk.csv']} rows, {written['users']} users, top {args.topk}, "
          f"excluded: {args.exclude}")
    if "embeddings" in written:
        d, n_u, n_i = written["embeddings"]
        print(f"{args.out}/user_embeddings.npy [{n_u} x {d}], item_embeddings.npy [{n_i} x {d}] "
              f"(row order: user_ids.txt, item_ids.txt)")
    else:
        print("no embeddings: the model's score is not an inner product of user and item vectors")
    if "item_index.faiss" in written:
        print(f"{args.out}/item_index.faiss: exact inner-product index of {written['item_index.faiss']} items")


def main(argv=None) -> int:
    """Exit status: 0, or 2 with one line on stderr for a bad checkpoint or argument (``--debug``: traceback)."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
