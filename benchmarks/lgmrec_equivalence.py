"""Our LGMRec against MMRec's, built from the same weights on a toy: the same loss, gradients and scores?

The reference check found MMRec's LGMRec stalling on TikTok's validation where ours climbs for 270 epochs
(``benchmarks/reference_check.md``). Before blaming the data pipeline, this checks the two model files compute
the same thing. It reads MMRec's ``src/models/lgmrec.py`` and ``src/common/abstract_recommender.py`` from a
snapshot of enoche/MMRec (``--mirror``: a bare git directory) into a temporary folder (never into this
repository), builds MMRec's model on a toy (30 users, 20 items, two dense modalities of 8 and 6 columns,
120 interactions) and ours from MMRec's initial weights (RecBole's padding row 0 added, every id shifted by
one), and compares:

1. noise off (gumbel-softmax as a plain softmax at the same temperature, keep rate 1): the training loss of one
   batch, every parameter's gradient, and the final user and item representations at evaluation;
2. noise on (gumbel noise, membership dropout at keep rate 0.5): the loss and gradients averaged over 400
   seeds on each side (the two draw their noise differently, so only the moments can agree), as z-scores
   of the difference of the means, and the evaluation representations over 300 draws.

    python benchmarks/lgmrec_equivalence.py --mirror /work/.mirror/enoche+MMRec/repo

writes ``benchmarks/lgmrec_equivalence.md``. One thread, seconds.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

U, I, DV, DT, D, K = 30, 20, 8, 6, 16, 4
MMREC_FILES = ("src/models/lgmrec.py", "src/common/abstract_recommender.py")


def extract_mmrec(mirror: str, into: Path) -> str:
    """MMRec's two files at the snapshot's HEAD under ``into``; returns the commit."""
    commit = subprocess.run(["git", "--git-dir", mirror, "rev-parse", "HEAD"], check=True, capture_output=True,
                            text=True).stdout.strip()
    for rel in MMREC_FILES:
        text = subprocess.run(["git", "--git-dir", mirror, "show", f"HEAD:{rel}"], check=True, capture_output=True,
                              text=True).stdout
        out = into / rel[len("src/"):]
        out.parent.mkdir(parents=True, exist_ok=True)
        (out.parent / "__init__.py").touch()
        out.write_text(text)
    return commit


class _Cfg(dict):
    def __getitem__(self, key):  # MMRec's Config answers None for a missing key
        return dict.get(self, key)


def toy():
    rng = np.random.default_rng(0)
    m = sp.coo_matrix((np.ones(120), (rng.integers(0, U, 120), rng.integers(0, I, 120))), shape=(U, I)).tocsr()
    m.data[:] = 1
    m = m.tocoo()
    v = rng.normal(2.0, 1.0, (I, DV)).astype(np.float32)  # raw-looking: far from zero mean, as TikTok's visual
    t = rng.normal(0.0, 0.3, (I, DT)).astype(np.float32)
    users = np.array([0, 1, 1, 2, 5, 5, 5, 7, 9, 11, 29, 3])  # repeated users, as a batch holds them
    users = np.array([u for u in users if (m.row == u).any()])
    pos = np.array([m.col[np.where(m.row == u)[0][0]] for u in users])
    neg = rng.integers(0, I, len(users))
    return m, v, t, torch.tensor(users), torch.tensor(pos), torch.tensor(neg)


def build(mmrec_cls, m, v, t, keep: float, folder: Path):
    """MMRec's model on the toy, and ours with MMRec's initial weights."""
    from recbole.model.loss import BPRLoss, EmbLoss

    from recbole_metammf.layers.content import TunableContent
    from recbole_metammf.layers.graph import SparseGraph, bipartite_adjacency, normalise
    from recbole_metammf.model.lgmrec import LGMRec

    np.save(folder / "v.npy", v)
    np.save(folder / "t.npy", t)

    class _Data:
        dataset = type("DS", (), {"get_user_num": lambda self: U, "get_item_num": lambda self: I})()

        def inter_matrix(self, form="coo"):
            return m.copy()

    cfg = dict(USER_ID_FIELD="u", ITEM_ID_FIELD="i", NEG_PREFIX="neg_", train_batch_size=12, device=torch.device("cpu"),
               end2end=False, is_multimodal_model=True, data_path=str(folder.parent) + "/", dataset=folder.name,
               vision_feature_file="v.npy", text_feature_file="t.npy", embedding_size=D, feat_embed_dim=D,
               cf_model="lightgcn", n_mm_layers=2, n_ui_layers=2, n_hyper_layer=1, hyper_num=K, keep_rate=keep,
               alpha=0.3, cl_weight=1e-1, reg_weight=1e-2)
    torch.manual_seed(0)
    ref = mmrec_cls(_Cfg(cfg), _Data())

    # ours, built without a RecBole dataset: the attributes its __init__ sets, MMRec's weights in rows 1..
    shifted = sp.coo_matrix((m.data, (m.row + 1, m.col + 1)), shape=(U + 1, I + 1))

    class _Spec:
        def __init__(self, dim):
            self.dim, self.kind, self.field = dim, "dense", "x"

    class _Modalities:
        specs = [_Spec(DV), _Spec(DT)]

        def per_modality(self, items=None):
            return [torch.cat([torch.zeros(1, DV), torch.from_numpy(v)]), torch.cat([torch.zeros(1, DT), torch.from_numpy(t)])]

    ours = LGMRec.__new__(LGMRec)
    nn.Module.__init__(ours)
    ours.n_users, ours.n_items = U + 1, I + 1
    ours.USER_ID, ours.ITEM_ID, ours.NEG_ITEM_ID = "u", "i", "neg_i"
    ours.embedding_size, ours.cf_model, ours.n_ui_layers, ours.n_mm_layers = D, "lightgcn", 2, 2
    ours.n_hyper_layer, ours.hyper_num, ours.keep_rate, ours.alpha = 1, K, keep, 0.3
    ours.cl_weight, ours.tau, ours.reg_weight = 1e-1, 0.2, 1e-2
    ours.cold_item_id = "none"
    ours.register_buffer("cold_items", torch.zeros(I + 1, dtype=torch.bool))
    ours.modalities = _Modalities()
    ours.content = TunableContent(ours.modalities, False)
    ours.user_embedding, ours.item_embedding = nn.Embedding(U + 1, D), nn.Embedding(I + 1, D)
    with torch.no_grad():
        ours.user_embedding.weight[1:] = ref.user_embedding.weight
        ours.item_embedding.weight[1:] = ref.item_id_embedding.weight
    ours.projections = nn.ParameterList([nn.Parameter(ref.item_image_trs.detach().clone()),
                                         nn.Parameter(ref.item_text_trs.detach().clone())])
    ours.hyperedges = nn.ParameterList([nn.Parameter(ref.v_hyper.detach().clone()), nn.Parameter(ref.t_hyper.detach().clone())])
    ours.norm_adj = SparseGraph(normalise(bipartite_adjacency(type("D", (), {"inter_matrix": lambda self, form="coo": shifted.copy()})()), "sym"))
    inter = shifted.astype(np.float32).tocsr()
    inter.data[:] = 1
    ours.user_item, ours.user_mean = SparseGraph(inter), SparseGraph(normalise(sp.csr_matrix(inter), "mean"))
    real = torch.ones(I + 1, 1)
    real[0] = 0
    ours.register_buffer("real_items", real, persistent=False)
    ours.bpr_loss, ours.reg_loss = BPRLoss(), EmbLoss()
    ours.restore_user_e = ours.restore_item_e = None
    pairs = [("user IDs", ref.user_embedding.weight, ours.user_embedding.weight),
             ("item IDs", ref.item_id_embedding.weight, ours.item_embedding.weight),
             ("visual projection", ref.item_image_trs, ours.projections[0]),
             ("acoustic projection", ref.item_text_trs, ours.projections[1]),
             ("visual hyperedges", ref.v_hyper, ours.hyperedges[0]), ("acoustic hyperedges", ref.t_hyper, ours.hyperedges[1])]
    return ref, ours, pairs


def _ours_rows(p_ref, g_ours):
    return g_ours[1:] if g_ours.shape[0] != p_ref.shape[0] else g_ours  # drop the padding row


@contextlib.contextmanager
def plain_softmax():
    """gumbel-softmax without the noise, on both sides (they call ``F.gumbel_softmax``)."""
    saved = F.gumbel_softmax
    F.gumbel_softmax = lambda logits, tau=1, hard=False, dim=-1, **kw: torch.softmax(logits / tau, dim=dim)
    try:
        yield
    finally:
        F.gumbel_softmax = saved


def noise_off(mmrec_cls, data, folder: Path) -> list[str]:
    m, v, t, users, pos, neg = data
    with plain_softmax():
        ref, ours, pairs = build(mmrec_cls, m, v, t, 1.0, folder)
        ref.train(), ours.train()
        loss_ref = ref.calculate_loss(torch.stack([users, pos, neg]))
        loss_ours = ours.calculate_loss({"u": users + 1, "i": pos + 1, "neg_i": neg + 1})
        loss_ref.backward()
        loss_ours.backward()
        lines = ["## 1. Noise off (softmax memberships, keep rate 1): one batch", "",
                 f"Training loss: MMRec **{loss_ref.item():.7f}**, ours **{loss_ours.item():.7f}**.", "",
                 "| parameter | max abs. gradient | max abs. difference |", "|---|---|---|"]
        for name, p_ref, p_ours in pairs:
            diff = (p_ref.grad - _ours_rows(p_ref, p_ours.grad)).abs().max().item()
            lines.append(f"| {name} | {p_ref.grad.abs().max().item():.2e} | {diff:.2e} |")
        pad = max(ours.user_embedding.weight.grad[0].abs().max().item(), ours.item_embedding.weight.grad[0].abs().max().item())
        ref.eval(), ours.eval()
        with torch.no_grad():
            u_ref, i_ref, _ = ref.forward()
            u_ours, i_ours = ours.compute_all()
        lines += ["", f"Ours' padding rows' gradient: {pad:.1e}. Evaluation representations, max abs. difference: users "
                  f"{(u_ref - u_ours[1:]).abs().max().item():.2e}, items {(i_ref - i_ours[1:]).abs().max().item():.2e}.", ""]
    return lines


def noise_on(mmrec_cls, data, folder: Path, draws: int = 400) -> list[str]:
    m, v, t, users, pos, neg = data
    ref, ours, pairs = build(mmrec_cls, m, v, t, 0.5, folder)
    ref.train(), ours.train()

    p_ref = [a for _, a, _ in pairs]
    p_ours = [b for _, _, b in pairs]

    def moments(loss_fn, params):
        """Mean loss and gradients over the draws (with their standard errors); ours without its padding rows."""
        losses, grads = [], []
        for seed in range(draws):
            torch.manual_seed(seed)
            for p in params:
                p.grad = None
            loss = loss_fn()
            loss.backward()
            losses.append(loss.item())
            grads.append(torch.cat([_ours_rows(q, p.grad).flatten() for q, p in zip(p_ref, params)]))
        grads = torch.stack(grads)
        return np.mean(losses), np.std(losses) / np.sqrt(draws), grads.mean(0), grads.std(0) / np.sqrt(draws)

    a = moments(lambda: ref.calculate_loss(torch.stack([users, pos, neg])), p_ref)
    b = moments(lambda: ours.calculate_loss({"u": users + 1, "i": pos + 1, "neg_i": neg + 1}), p_ours)
    z = (a[2] - b[2]) / torch.sqrt(a[3] ** 2 + b[3] ** 2 + 1e-12)
    ref.eval(), ours.eval()
    with torch.no_grad():
        A = torch.stack([torch.cat(ref.forward()[:2]) for _ in range(300)])
        B = torch.stack([torch.cat([x[1:] for x in ours.compute_all()]) for _ in range(300)])
    zz = (A.mean(0) - B.mean(0)) / torch.sqrt(A.var(0) / 300 + B.var(0) / 300 + 1e-12)
    return ["## 2. Noise on (gumbel noise, keep rate 0.5): moments over draws", "",
            f"Mean training loss over {draws} seeds: MMRec {a[0]:.4f} ± {a[1]:.4f}, ours {b[0]:.4f} ± {b[1]:.4f} "
            "(± the standard error).", "",
            f"Mean gradients, z-score of the difference for each of the {z.numel()} entries: mean {z.mean().item():.3f}, "
            f"standard deviation {z.std().item():.3f}, largest {z.abs().max().item():.2f} (for equal means about "
            f"0, 1 and {np.sqrt(2 * np.log(z.numel())):.1f}).", "",
            f"Evaluation representations over 300 draws: z-scores' standard deviation {zz.std().item():.3f}, "
            f"largest {zz.abs().max().item():.2f}.", ""]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mirror", required=True, help="a bare git directory of enoche/MMRec")
    parser.add_argument("--out", default=str(HERE / "lgmrec_equivalence.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        try:
            commit = extract_mmrec(os.path.abspath(args.mirror), tmp / "mmrec")
        except subprocess.CalledProcessError as err:
            why = (err.stderr or "").strip().splitlines()
            raise SystemExit(f"--mirror {args.mirror}: not a git snapshot of enoche/MMRec holding "
                             f"{', '.join(MMREC_FILES)} ({why[-1] if why else err})")
        sys.path.insert(0, str(tmp / "mmrec"))
        from models.lgmrec import LGMRec as MMRecLGMRec

        folder = tmp / "toy"
        folder.mkdir()
        data = toy()
        lines = ["# Our LGMRec against MMRec's, from the same weights on a toy", "",
                 "Written by `benchmarks/lgmrec_equivalence.py` (its docstring says what is built and compared):", "",
                 "```bash", f"python benchmarks/lgmrec_equivalence.py --mirror MMREC_GIT_DIR   # enoche/MMRec at {commit}",
                 "```", "", f"{len(data[3])} training rows in the batch; the toy: {U} users, {I} items, "
                 f"{data[0].nnz} interactions, modalities of {DV} and {DT} columns, embedding {D}, {K} hyperedges.", ""]
        lines += noise_off(MMRecLGMRec, data, folder)
        lines += noise_on(MMRecLGMRec, data, folder)
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
