"""What both sides of the reference check and its page share: where things are, the models and how their
settings meet (``MODELS``), and running a side in its own process and recording it."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from datetime import datetime, timezone


HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # benchmarks/
REPO = os.path.dirname(HERE)
CLI = os.path.join(HERE, "reference_check.py")  # what the runs' drivers are run as
RESULTS = os.path.join(HERE, "reference_check")

DEFAULT_SCRATCH = "/work/scratch/refcheck"
DATASET = "tiktok-diffmm"
# our modality column -> MMRec's feature slot (MMRec reads exactly these two files)
MODALITY_FILES = {"visual": "image_feat.npy", "acoustic": "text_feat.npy"}
SIDES = ("ours", "reference")
TOLERANCE = 0.05  # the bar: within 5 % of the reference's mean test Recall@20


# ---------------------------------------------------------------------------------------------
# Reading our converted data
# ---------------------------------------------------------------------------------------------

def read_atomic(path: str):
    import pandas as pd

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: missing (convert the dataset first: python -m dataset_converters ...)")
    frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    frame.columns = [c.split(":")[0] for c in frame.columns]
    return frame


def sorted_tokens(tokens) -> list[str]:
    """Distinct tokens, numerically when all are integers (then ids keep their order)."""
    tokens = set(tokens)
    if all(re.fullmatch(r"-?\d+", t) for t in tokens):
        return sorted(tokens, key=int)
    return sorted(tokens)


# ---------------------------------------------------------------------------------------------
# The models and how their settings meet
# ---------------------------------------------------------------------------------------------

def _same(*keys):
    return {k: k for k in keys}


def _freedom_image_weight(cfg: dict) -> float:
    weights = cfg.get("modality_weights")
    fields = cfg.get("modality_fields") or list(MODALITY_FILES)
    if not weights:
        return 1.0 / len(fields)  # ours: equal weights
    return float(weights[fields.index("visual")]) / float(sum(weights))


def _lattice_weight_size(cfg: dict) -> list:
    """MMRec's LATTICE runs ``len(weight_size)`` LightGCN layers (the sizes themselves are for its NGCF)."""
    return [int(cfg["embedding_size"])] * int(cfg["n_ui_layers"])


def _content_reg_weight(cfg: dict) -> float:
    """Our L2 weight on the scored vectors (``content_reg_weight``); 0 where the model has none set."""
    return float(cfg.get("content_reg_weight") or 0.0)


def _diffmm_choice(cfg: dict, key: str, argument: str, table: dict) -> int:
    """The reference's integer ``argument`` for our categorical setting ``key`` (``table``: our value -> theirs)."""
    value = str(cfg.get(key)).lower()
    if value not in table:
        raise ValueError(f"DiffMM: {key} {cfg.get(key)!r} has no {argument} in the reference "
                         f"(one of {sorted(table)})")
    return table[value]


def _diffmm_trans(cfg: dict) -> int:
    """DiffMM's ``--trans``: 1 = a Linear per modality (ours ``linear``), 0 = weight matrix + LeakyReLU."""
    return _diffmm_choice(cfg, "feat_transform", "--trans", DIFFMM_TRANS)


def _diffmm_cl_method(cfg: dict) -> int:
    """DiffMM's ``--cl_method``: 1 = each modality view against the main output (ours ``main``), 0 = pairs."""
    return _diffmm_choice(cfg, "cl_method", "--cl_method", DIFFMM_CL_METHOD)


def _diffmm_dims(cfg: dict) -> str:
    """DiffMM's ``--dims``: the denoiser's hidden widths as the list literal its Main.py evaluates."""
    dims = cfg.get("denoise_dims")
    if not isinstance(dims, (list, tuple)) or not dims or not all(isinstance(d, int) for d in dims):
        raise ValueError(f"DiffMM: denoise_dims must be a list of int, got {dims!r}")
    return "[" + ", ".join(str(d) for d in dims) + "]"


DIFFMM_TRANS = {"linear": 1, "leaky_relu": 0}
DIFFMM_CL_METHOD = {"main": 1, "pairwise": 0}


# MMRec key <- our key (or a function of our resolved config). Settings MMRec has and we do not
# keep MMRec's own value (first grid value where its YAML gives a list: see ``mmrec_first``).
# ``ours_set``: settings our side is given for the check (after the model YAML, before ``--set``):
# our keys whose reference value MMRec hard-codes rather than reads from a config.
MODELS = {
    "LightGCN": {
        "ours": "LightGCN", "reference": "LightGCN",
        "map": _same("embedding_size", "n_layers", "reg_weight"),
        "notes": "Same model on both sides (RecBole's LightGCN through the plugin; MMRec's lightgcn.py).",
    },
    "VBPR": {
        "ours": "VBPR", "reference": "VBPR",
        # MMRec: user [gamma_u ; theta_u] of 2 x embedding_size, item [gamma_i ; W f_i]; reg_weight x EmbLoss of
        # the scored user / item vectors = our content_reg_weight (scope whole); our reg_weight (ID factors and
        # biases) has no MMRec counterpart.
        "map": {"embedding_size": "id_embedding_size", "reg_weight": "content_reg_weight"},
        "notes": "Ours adds an item bias and a content bias (the paper's beta_i, beta'), L2 on ID factors "
                 "(reg_weight) and standardised features; MMRec's W has a bias and reads raw features.",
    },
    "FREEDOM": {
        "ours": "FREEDOM", "reference": "FREEDOM",
        "map": {**_same("embedding_size", "knn_k", "n_mm_layers", "n_ui_layers"),
                "feat_embed_dim": "embedding_size", "dropout": "edge_prune_ratio",
                "reg_weight": "modal_loss_weight", "mm_image_weight": _freedom_image_weight},
        "ours_set": {"finetune_features": True},  # MMRec: from_pretrained(..., freeze=False)
        "notes": "Issue 22 lists the definitional differences (graph mix, standardised features, frozen "
                 "content, modality-BPR weight); the mix, the weight and fine-tuned content are set equal "
                 "here, standardised features stay (`--set '{\"standardize_modalities\": false}'` reads "
                 "them raw, as MMRec).",
    },
    "MMGCN": {
        "ours": "MMGCN", "reference": "MMGCN",
        # MMRec: reg_weight x (mean squared ID rows of the batch + mean squared visual preference), as the
        # authors' code; ours reg_weight on the batch's ID embeddings and user preferences
        "map": _same("embedding_size", "n_layers", "reg_weight"),
        "notes": "MMRec's `mmgcn.py` departs from the paper (and from ours) in six places, read from its code: "
                 "(1) `id_embedding` and each modality's user `preference` are plain tensors "
                 "(`xavier_normal_(torch.rand(..., requires_grad=True)).to(device)`), not registered parameters, so "
                 "its optimiser never updates them: users and IDs stay at their random start; (2) its GCN always "
                 "runs three layers (`forward` is written out three times; `n_layers` is read and unused); (3) "
                 "`concate = 'False'` is a non-empty string, so the concatenating combination runs; (4) `aggr_mode` "
                 "mean, no degree normalisation; (5) the first modality is projected to 256 without activation "
                 "(`dim_latent=256`), the second enters at its raw width; (6) the modalities' outputs are averaged. "
                 "Ours follows the paper (trained IDs and preferences, `n_layers`, the element-wise combination, "
                 "symmetric normalisation, a LeakyReLU projection to `embedding_size`, summed modalities) and "
                 "standardises the features, which MMRec reads raw.",
    },
    "GRCN": {
        "ours": "GRCN", "reference": "GRCN",
        # MMRec's n_layers is the routing count of its CGCN; latent_embedding the content width
        "map": {**_same("embedding_size", "reg_weight"), "latent_embedding": "content_embedding_size",
                "n_layers": "n_routing"},
        "notes": "Both prune with the confidence-weighted edge affinities (`weight_mode` confid) and concatenate "
                 "ID and content parts. Ours standardises the features, MMRec reads them raw.",
    },
    "LATTICE": {
        "ours": "LATTICE", "reference": "LATTICE",
        # MMRec's reg_weight: 1/2 the squared norms of the batch's final user / item vectors over the batch
        # size = our content_reg_weight with require_pow (0 on both sides by default: MMRec's first grid value)
        "map": {**_same("embedding_size", "knn_k", "lambda_coeff", "n_layers"),
                "feat_embed_dim": "feat_embedding_size", "weight_size": _lattice_weight_size,
                "reg_weight": _content_reg_weight},
        "ours_set": {"ui_graph_norm": "mean_self_loops", "item_graph_mode": "mix_first",
                     "item_graph_update": "first_batch", "finetune_features": True, "require_pow": True},
        "notes": "Ours is run with the keys that reproduce MMRec's definitions (issue 22: D~^-1 (A + I) "
                 "user-item graph, signed cosines mixed before normalising, graph built on each epoch's "
                 "first batch and at evaluation, fine-tuned content); both read the features raw (our default since "
                 "issue 22's definitions check). MMRec decays the "
                 "learning rate by 0.96^(epoch/50) (its LATTICE.yaml); ours does not.",
    },
    "BM3": {
        "ours": "BM3", "reference": "BM3",
        # MMRec's reg_weight: EmbLoss of the whole online ID tables, as ours; no negative sampling on both sides
        "map": _same("embedding_size", "n_layers", "dropout", "reg_weight", "cl_weight"),
        "notes": "Both fine-tune the features (ours `finetune_features: True`); ours standardises them, MMRec "
                 "reads them raw.",
    },
    "MGCN": {
        "ours": "MGCN", "reference": "MGCN",
        "map": _same("embedding_size", "n_ui_layers", "n_layers", "knn_k", "cl_loss", "reg_weight"),
        "notes": "Both fine-tune the features; ours standardises them, MMRec reads them raw. MMRec decays the "
                 "learning rate by 0.96^(epoch/50) (its MGCN.yaml); ours does not.",
    },
    "LGMRec": {
        "ours": "LGMRec", "reference": "LGMRec",
        "map": {**_same("embedding_size", "cf_model", "n_ui_layers", "n_mm_layers", "n_hyper_layer", "hyper_num",
                        "keep_rate", "alpha", "cl_weight", "reg_weight"),
                "feat_embed_dim": "embedding_size"},
        "notes": "Both keep the features frozen; ours standardises them, MMRec reads them raw.",
    },
    "DRAGON": {
        "ours": "DRAGON", "reference": "DRAGON",
        # MMRec reads its user-user graph from user_graph_dict.npy, made by its own
        # preprocessing/dualgnn-gen-u-u-matrix.py (run once in the scratch checkout: prepare_dragon_user_graph);
        # ours builds the graph inside the model from the training interactions
        "map": {**_same("embedding_size", "n_mm_layers", "knn_k", "reg_weight"),
                "feat_embed_dim": "embedding_size", "mm_image_weight": _freedom_image_weight},
        "prepare": "dragon_user_graph",
        "notes": "On the CPU MMRec's DRAGON fails in its first batch (`forward` assigns a tensor to `result_embed`, "
                 "which `.to(device)` leaves a registered parameter on the CPU, a plain tensor on a GPU): the scratch "
                 "copy is patched to the GPU's plain tensor (DRAGON_CPU_PATCH). MMRec's `aggr_mode` is a grid key "
                 "(`['add']`): given as MMRec's first grid value `add` (`mmrec_grid_firsts`); left a list, its "
                 "graph layers skipped their degree normalisation and the loss became NaN at the second batch. "
                 "MMRec's user graph comes from its preprocessing script (run on the same training split); "
                 "ours is built in the model from the training interactions. Ours standardises the features, "
                 "MMRec reads them raw. The tie rule of that graph decided a gap of -8.3 %: with co-users of equal "
                 "count kept smaller id first (row DRAGON@ties-by-id, `user_graph_tie_seed: ~`) ours gave .0951 / "
                 ".0806 / .0853 against MMRec's .0971 / .0914 / .0962; with ties in a seeded order of the users "
                 "(the default since 2630b33) .0972 / .0878 / .0930, -2.4 %. The script leaves ties to "
                 "`torch.topk`, whose picks spread over the ids; TikTok's low ids are its heavy users, so the "
                 "smaller-id rule filled short lists with the same hubs (the users it kept in place of the script's "
                 "picks: 249 training interactions against 45; seeded, the lists' mean training degree is 164 "
                 "against 156 in the script's file, whose top-40 count lists ours matches for every user: "
                 "docs/models.md). DRAGON@ties-by-id repeats the 2026-12-02 run of that rule (.0953 / "
                 ".0806 / .0853; validation curves identical to epoch 8 at seed 2020, then parting by rounding "
                 "on another day's machine: `benchmarks/run_to_run.md`)",
    },
    "DiffMM": {
        # not in MMRec: the authors' code (github HKUDS/DiffMM), patched at run time (run_diffmm_reference);
        # keys are its Main.py arguments (Params.py), stopping_step the one the patch adds
        "ours": "DiffMM", "reference": "DiffMM", "reference_repo": "HKUDS/DiffMM",
        "reference_label": "HKUDS/DiffMM `Main.py` arguments",
        "training_map": {"lr": "learning_rate", "batch": "train_batch_size", "epoch": "epochs",
                         "stopping_step": "stopping_step"},
        "map": {"latdim": "embedding_size", "gnn_layer": "n_layers", "trans": _diffmm_trans, "reg": "reg_weight",
                "ssl_reg": "ssl_reg", "temp": "temperature", "cl_method": _diffmm_cl_method, "keepRate": "keep_rate",
                "ris_lambda": "ris_lambda", "ris_adj_lambda": "ris_adj_lambda", "dims": _diffmm_dims,
                "d_emb_size": "time_emb_size", "norm": "denoise_norm", "steps": "steps",
                "noise_scale": "noise_scale", "noise_min": "noise_min", "noise_max": "noise_max",
                "sampling_noise": "sampling_noise", "sampling_steps": "sampling_steps", "rebuild_k": "rebuild_k",
                "e_loss": "e_loss"},
        "notes": "Our YAML's defaults are the README's TikTok command (`--reg 1e-4 --ssl_reg 1e-2 --epoch 50 "
                 "--trans 1 --e_loss 0.1 --cl_method 1`) and Params.py's defaults. Checked equal, no argument: "
                 "`diffusion_batch_size` (their `batch` serves both parts), `diffusion_learning_rate` (their `lr` "
                 "serves both), `denoise_dropout` (their Denoise's fixed 0.5), `modality_fields` [visual, acoustic]. "
                 "Given by the script: `--data tiktok-diffmm --data_dir` (the copy below), `--seed`, `--topk 20`, "
                 "`--tstEpoch 1`; the rest Params.py's defaults (`tstBat` 256). Ours standardises the features "
                 "(their code reads them raw).",
    },
}

TRAINING_MAP = _same("learning_rate", "train_batch_size", "epochs", "stopping_step")


# ---------------------------------------------------------------------------------------------
# Running a side and recording it
# ---------------------------------------------------------------------------------------------

def row_label(model: str, args) -> str:
    """A row's name: the model, or ``MODEL@TAG`` for a run with ``--tag`` (another setting of the same pair,
    e.g. a longer patience, kept in its own files and row)."""
    tag = getattr(args, "tag", None)
    return f"{model}@{tag}" if tag else model


def result_path(model: str, side: str, seed: int) -> str:
    return os.path.join(RESULTS, f"{model}__{side}__seed{seed}.json")


def _env_one_thread() -> dict:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                "NUMEXPR_NUM_THREADS": "1", "PYTHONHASHSEED": "0"})
    return env


def write_json(path: str, record: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(record, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(path + ".tmp", path)


def finished_record(record: dict, returncode: int, text: str, parse, missing: str) -> dict:
    """``record`` of a reference run completed from its exit status and output: ``ok`` with what ``parse``
    reads from ``text``, or ``failed`` with the output's tail (a non-zero exit, or no selected epoch: ``missing``)."""
    if returncode != 0:
        record.update(status="failed", error=text[-3000:])
        return record
    parsed = parse(text)
    if "test" not in parsed:
        record.update(status="failed", error=f"{missing}: " + text[-2000:])
        return record
    record.update(status="ok", **parsed)
    return record


def run_logged(cmd: list, cwd: str, log_path: str, append: bool = False) -> tuple[int, float, str]:
    """Run ``cmd`` in ``cwd`` with one thread, its output into ``log_path`` (after what it holds when ``append``):
    (exit status, wall seconds, the whole log)."""
    t0 = time.perf_counter()
    with open(log_path, "a" if append else "w") as log:
        proc = subprocess.run(cmd, cwd=cwd, env=_env_one_thread(), stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    with open(log_path) as f:
        return proc.returncode, wall, f.read()


def stamp_record(record: dict) -> dict:
    if REPO not in sys.path:  # run as a script (``python benchmarks/reference_check.py``) the checkout is not on the path
        sys.path.insert(0, REPO)
    from recbole_metammf.benchmark.trial import machine

    record.update(host=platform.node(), machine=machine(), finished_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  load_average_at_end=[round(x, 2) for x in os.getloadavg()])
    return record
