"""DiffMM's reference side: its authors' code (github HKUDS/DiffMM), extracted from a git snapshot into the
scratch folder and patched there, run on a copy of the shared DiffMM-layout TikTok folder."""

from __future__ import annotations

import json
import os
import re
import shlex
import statistics
import subprocess
import sys

from . import shared, ours_side


DEFAULT_DIFFMM_MIRROR = "/work/.mirror/HKUDS+DiffMM/repo"
DEFAULT_DIFFMM_DATA = "/work/shared/data/tiktok-diffmm"
DIFFMM_CODE = ("Main.py", "Model.py", "DataHandler.py", "Params.py", "Utils")  # what is extracted (no Datasets/)
# the copy their DataHandler reads: file in the copy <- file in the shared folder. The shared folder has no
# text_feat.npy, so our acoustic modality takes their text slot (as in MMRec's layout,
# ``mmrec_side.write_mmrec_layout``), and the run's --data is a name other than 'tiktok', which selects their
# two-modality path (image + text slot).
DIFFMM_DATA_FILES = {"trnMat.pkl": "trnMat.pkl", "valMat.pkl": "valMat.pkl", "tstMat.pkl": "tstMat.pkl",
                     "image_feat.npy": "image_feat.npy", "text_feat.npy": "audio_feat.npy"}
DIFFMM_DATA_NAME = "tiktok-diffmm"
DIFFMM_SPLIT_FILES = {"train": "trnMat.pkl", "valid": "valMat.pkl", "test": "tstMat.pkl"}
DIFFMM_DENOISE_DROPOUT = 0.5  # Model.py's Denoise(dropout=0.5) default; Main.py never sets it
DIFFMM_TOPK = 20

_DIFFMM_NEW_ARGS = (
    "\tparser.add_argument('--data_dir', type=str, default='', help='refcheck: folder of trnMat.pkl / valMat.pkl / "
    "tstMat.pkl and the feature files (empty: ./Datasets/NAME/)')\n"
    "\tparser.add_argument('--stopping_step', type=int, default=-1, help='refcheck: stop after this many more epochs "
    "without a validation Recall as high as the best (-1: never)')\n")

_DIFFMM_VALID_AND_STOP = (
    "\t\t\t\tlog(self.makePrint('Test', ep, reses, tstFlag))\n"
    "\t\t\t\ttstReses = reses\n"
    "\t\t\t\treses = self.testEpoch(self.handler.valLoader)\n"
    "\t\t\t\tlog(self.makePrint('Valid', ep, reses, False))\n"
    "\t\t\t\tprint('refcheck epoch %d valid recall@%d %.10g ndcg@%d %.10g test recall@%d %.10g ndcg@%d %.10g' % ("
    "ep, args.topk, reses['Recall'], args.topk, reses['NDCG'], args.topk, tstReses['Recall'], args.topk, "
    "tstReses['NDCG']))\n"
    "\t\t\t\tif reses['Recall'] >= valBest:\n"
    "\t\t\t\t\tvalBest, valEpoch, valReses, valTstReses, valWait = reses['Recall'], ep, reses, tstReses, 0\n"
    "\t\t\t\telse:\n"
    "\t\t\t\t\tvalWait += 1\n"
    "\t\t\t\t\tif args.stopping_step >= 0 and valWait > args.stopping_step:\n"
    "\t\t\t\t\t\tvalStopped = 1\n"
    "\t\t\t\t\t\tbreak\n")

_DIFFMM_THEIR_BEST = ("\t\tprint('Best epoch : ', bestEpoch, ' , Recall : ', recallMax, ' , NDCG : ', ndcgMax, "
                      "' , Precision', precisionMax)\n")

# (file, text, replacement, how many times the text must occur, what it does). Applied in this order to the
# extracted files; every count is checked before anything is written (diffmm_patch).
DIFFMM_PATCHES = (
    ("Main.py", ".cuda()", "", 16, "CPU: every `.cuda()` removed (Main.py 16, Model.py 12, DataHandler.py 2, "
                                   "Utils/Utils.py 1)"),
    ("Model.py", ".cuda()", "", 12, None),
    ("DataHandler.py", ".cuda()", "", 2, None),
    ("Utils/Utils.py", ".cuda()", "", 1, None),
    ("Main.py", "import setproctitle\n", "", 1, "Main.py's unused `import setproctitle` removed (not installed here)"),
    ("Main.py", "import os\n", "import os\nimport time\n", 1, "Main.py imports `time` (for the epoch timing)"),
    ("Params.py", "\treturn parser.parse_args()\n", _DIFFMM_NEW_ARGS + "\treturn parser.parse_args()\n", 1,
     "Params.py: two new arguments, `--data_dir` (the data folder) and `--stopping_step` (patience, -1 = never)"),
    ("DataHandler.py", "\t\tself.predir = predir\n",
     "\t\tif args.data_dir:\n\t\t\tpredir = args.data_dir.rstrip('/') + '/'\n\t\tself.predir = predir\n", 1,
     "DataHandler reads `--data_dir` when given (else their `./Datasets/NAME/`)"),
    ("DataHandler.py", "\t\tself.tstfile = predir + 'tstMat.pkl'\n",
     "\t\tself.tstfile = predir + 'tstMat.pkl'\n\t\tself.valfile = predir + 'valMat.pkl'\n", 1,
     "DataHandler loads valMat.pkl (their code never does) ..."),
    ("DataHandler.py",
     "\t\tself.tstLoader = dataloader.DataLoader(tstData, batch_size=args.tstBat, shuffle=False, num_workers=0)\n",
     "\t\tself.tstLoader = dataloader.DataLoader(tstData, batch_size=args.tstBat, shuffle=False, num_workers=0)\n"
     "\t\tvalData = TstData(self.loadOneFile(self.valfile), trnMat)\n"
     "\t\tself.valLoader = dataloader.DataLoader(valData, batch_size=args.tstBat, shuffle=False, num_workers=0)\n", 1,
     "... into a `valLoader` built as their test loader (their `TstData`: each user's training items masked)"),
    ("Main.py", "\tdef testEpoch(self):\n\t\ttstLoader = self.handler.tstLoader\n",
     "\tdef testEpoch(self, tstLoader=None):\n\t\ttstLoader = self.handler.tstLoader if tstLoader is None else "
     "tstLoader\n", 1, "`testEpoch` takes the loader to evaluate (default: the test loader, as before) ..."),
    ("Main.py", "self.handler.tstLoader.dataset.tstLocs", "tstLoader.dataset.tstLocs", 1,
     "... and scores against that loader's items"),
    ("Main.py", "\t\tbestEpoch = 0\n",
     "\t\tbestEpoch = 0\n\t\tvalBest, valEpoch, valReses, valTstReses, valWait, valStopped = float('-inf'), None, "
     "None, None, 0, 0\n", 1, "`run` keeps the best validation epoch beside their best test epoch"),
    ("Main.py", "\t\t\treses = self.trainEpoch()\n",
     "\t\t\trefcheckStart = time.perf_counter()\n\t\t\treses = self.trainEpoch()\n"
     "\t\t\tprint('refcheck epoch %d train_time %.4fs' % (ep, time.perf_counter() - refcheckStart))\n", 1,
     "`trainEpoch` timed (diffusion step, graph rebuild and recommender step): `refcheck epoch N train_time Xs`"),
    ("Main.py", "\t\t\t\tlog(self.makePrint('Test', ep, reses, tstFlag))\n", _DIFFMM_VALID_AND_STOP, 1,
     "after their test evaluation of each epoch: validation, a `Valid` line in their format, a `refcheck epoch N "
     "valid ... test ...` line; the best validation Recall@20 (ties to the later epoch, as RecBole) is kept and "
     "training stops after `stopping_step` more epochs without one as high (RecBole's rule)"),
    ("Main.py", _DIFFMM_THEIR_BEST,
     _DIFFMM_THEIR_BEST + "\t\tif valEpoch is not None:\n"
     "\t\t\tprint('refcheck selected epoch %d stopped_early %d valid recall@%d %.10g ndcg@%d %.10g test recall@%d "
     "%.10g ndcg@%d %.10g' % (valEpoch, valStopped, args.topk, valReses['Recall'], args.topk, valReses['NDCG'], "
     "args.topk, valTstReses['Recall'], args.topk, valTstReses['NDCG']))\n", 1,
     "after their `Best epoch : ...` line (best test epoch, the literature's number, kept as a diagnostic): "
     "`refcheck selected epoch N ...` with the validation-selected epoch's test Recall@20 / NDCG@20"),
)


def diffmm_patch(root: str, patches=DIFFMM_PATCHES) -> list[str]:
    """Apply ``patches`` (file, text, replacement, expected count, description) to the files under ``root``, in
    order. Every text must occur exactly its expected number of times at its turn, else ``ValueError`` naming the
    file, the text and the count found; all counts are checked before any file is written, so a failure leaves
    the files as they were. Returns the descriptions (the patch list a run records)."""
    texts: dict[str, str] = {}
    for name, old, new, count, _ in patches:
        path = os.path.join(root, name)
        if name not in texts:
            if not os.path.isfile(path):
                raise ValueError(f"{path}: missing; the DiffMM patch expects it (a changed upstream?)")
            with open(path, newline="") as f:  # line endings kept (their Params.py has CRLF ones)
                texts[name] = f.read()
        if "\r\n" in texts[name]:
            old, new = old.replace("\n", "\r\n"), new.replace("\n", "\r\n")
        found = texts[name].count(old)
        if found != count:
            raise ValueError(f"{path}: the DiffMM patch expects {old!r} {count} time(s), found {found} "
                             "(a changed upstream?)")
        texts[name] = texts[name].replace(old, new)
    for name, text in texts.items():
        path = os.path.join(root, name)
        with open(path + ".tmp", "w", newline="") as f:
            f.write(text)
        os.replace(path + ".tmp", path)
    return [d for *_, d in patches if d]


def _diffmm_patch_id(patches=DIFFMM_PATCHES) -> str:
    """A digest of the patch list and the patcher: a copy patched otherwise is rebuilt."""
    import hashlib
    import inspect

    return hashlib.sha256((repr(patches) + inspect.getsource(diffmm_patch)).encode()).hexdigest()[:12]


def diffmm_checkout(mirror: str, dest: str) -> tuple[str, str]:
    """The mirror's HEAD (their code files only, ``git archive``) extracted and patched in ``dest``; reused when
    its marker names the same commit and patch set. Returns (the folder, the commit). Extraction and patching
    happen in a temporary folder renamed at the end, so a failure leaves no half-patched copy."""
    import shutil

    commit = subprocess.run(["git", "--git-dir", mirror, "rev-parse", "HEAD"], check=True,
                            capture_output=True, text=True).stdout.strip()
    marker = os.path.join(dest, "REFCHECK_COMMIT")
    stamp = f"{commit} patches {_diffmm_patch_id()}"
    if os.path.isfile(marker):
        with open(marker) as f:
            if f.read().strip() == stamp:
                return dest, commit
    tmp = dest + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    archive = subprocess.run(["git", "--git-dir", mirror, "archive", commit, *DIFFMM_CODE], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
    diffmm_patch(tmp)
    with open(os.path.join(tmp, "REFCHECK_COMMIT"), "w") as f:
        f.write(stamp + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return dest, commit


def diffmm_same_split(shared_dir: str, atomic_dir: str, name: str = shared.DATASET) -> dict:
    """Check that the shared DiffMM-layout folder (what their code reads) and our converted dataset hold the same
    (user, item) pairs in each part of the split, user / item ids = the matrices' row / column indices = our
    tokens. The pickles are read with the converters' safe COO loader (no code runs). Returns the pair counts
    and the matrix shape; ``ValueError`` naming the files on any difference."""
    sys.path.insert(0, shared.REPO)
    from dataset_converters.safe_io import load_coo_pickle

    counts, shape = {}, None
    for part, file_name in DIFFMM_SPLIT_FILES.items():
        pkl = os.path.join(shared_dir, file_name)
        row, col, data, part_shape = load_coo_pickle(pkl)
        shape = shape or part_shape
        theirs = set(zip(row[data != 0].tolist(), col[data != 0].tolist()))
        inter = os.path.join(atomic_dir, f"{name}.{part}.inter")
        frame = shared.read_atomic(inter)
        ours = set(zip(map(int, frame["user_id"]), map(int, frame["item_id"])))
        if theirs != ours:
            only_theirs, only_ours = sorted(theirs - ours), sorted(ours - theirs)
            raise ValueError(f"{pkl} and {inter} differ: {len(only_theirs)} (user, item) pair(s) only in the pickle "
                             f"(first {only_theirs[:1]}), {len(only_ours)} only in ours (first {only_ours[:1]}); "
                             "both sides must see the same split")
        counts[part] = len(ours)
    return {"pairs": counts, "shape": list(shape)}


def diffmm_data_copy(shared_dir: str, dest: str) -> str:
    """Copy the files their DataHandler reads (``DIFFMM_DATA_FILES``) into ``dest`` (written under temporary
    names, then renamed); returns ``dest``."""
    import shutil

    os.makedirs(dest, exist_ok=True)
    for ours_name, shared_name in DIFFMM_DATA_FILES.items():
        src = os.path.join(shared_dir, shared_name)
        if not os.path.isfile(src):
            raise FileNotFoundError(f"{src}: missing; DiffMM's reference reads it (as {ours_name})")
        shutil.copyfile(src, os.path.join(dest, ours_name + ".tmp"))
    for ours_name in DIFFMM_DATA_FILES:
        os.replace(os.path.join(dest, ours_name + ".tmp"), os.path.join(dest, ours_name))
    return dest


def diffmm_reference_args(ours_cfg: dict, seed: int, data_dir: str) -> dict:
    """Their Main.py arguments (name -> value, in order) from our resolved DiffMM config: ``MODELS["DiffMM"]``'s
    maps, then what the script fixes (data, seed, top-K, evaluation every epoch). Settings of ours that their
    code has no argument for must equal what it does, else ``ValueError``."""
    spec = shared.MODELS["DiffMM"]
    problems = []
    if ours_cfg.get("diffusion_batch_size") not in (None, ours_cfg.get("train_batch_size")):
        problems.append(f"diffusion_batch_size {ours_cfg.get('diffusion_batch_size')} != train_batch_size "
                        f"{ours_cfg.get('train_batch_size')} (their --batch serves both)")
    if ours_cfg.get("diffusion_learning_rate") not in (None, ours_cfg.get("learning_rate")):
        problems.append(f"diffusion_learning_rate {ours_cfg.get('diffusion_learning_rate')} != learning_rate "
                        f"{ours_cfg.get('learning_rate')} (their --lr serves both)")
    if ours_cfg.get("denoise_dropout") != DIFFMM_DENOISE_DROPOUT:
        problems.append(f"denoise_dropout {ours_cfg.get('denoise_dropout')} != their fixed {DIFFMM_DENOISE_DROPOUT}")
    if list(ours_cfg.get("modality_fields") or []) != ["visual", "acoustic"]:
        problems.append(f"modality_fields {ours_cfg.get('modality_fields')} != ['visual', 'acoustic'] (their "
                        "image and text slots)")
    if problems:
        raise ValueError("DiffMM: our settings have no counterpart in the reference: " + "; ".join(problems))
    out = {}
    for ref_key, ours_key in {**spec["training_map"], **spec["map"]}.items():
        value = ours_key(ours_cfg) if callable(ours_key) else ours_cfg.get(ours_key)
        if value is None:
            raise ValueError(f"DiffMM: our config has no {ours_key!r} for the reference's --{ref_key}")
        out[ref_key] = value
    out.update({"data": DIFFMM_DATA_NAME, "data_dir": data_dir, "seed": int(seed), "topk": DIFFMM_TOPK,
                "tstEpoch": 1})
    return out


def diffmm_argv(args: dict) -> list[str]:
    """The command-line form of :func:`diffmm_reference_args`. Their booleans are ``type=bool`` (any non-empty
    string is True), so False is passed as the empty string and True as ``1``."""
    argv = []
    for key, value in args.items():
        argv += [f"--{key}", ("1" if value else "") if isinstance(value, bool) else str(value)]
    return argv


_DIFFMM_EVAL = re.compile(r"refcheck epoch (\d+) valid recall@(\d+) (\S+) ndcg@\d+ (\S+) test recall@\d+ (\S+) "
                          r"ndcg@\d+ (\S+)")
_DIFFMM_TIME = re.compile(r"refcheck epoch (\d+) train_time ([0-9.]+)s")
_DIFFMM_SELECTED = re.compile(r"refcheck selected epoch (\d+) stopped_early (\d) valid recall@(\d+) (\S+) "
                              r"ndcg@\d+ (\S+) test recall@\d+ (\S+) ndcg@\d+ (\S+)")
_DIFFMM_BEST_TEST = re.compile(r"Best epoch :\s+(\d+)\s+, Recall :\s+(\S+)\s+, NDCG :\s+(\S+)\s+, Precision\s+(\S+)")


def parse_diffmm_log(text: str) -> dict:
    """The patched DiffMM's output (their ``\\r`` progress lines included) -> the fields ``run_reference``
    records: the validation curve, every epoch's training seconds, the validation-selected epoch and its test
    Recall / NDCG (from the patch's ``refcheck`` lines, 10 significant digits), and their own best-test line
    as ``reference_best_test`` (a diagnostic). ``ValueError`` if the selected epoch is not the last one with
    the highest validation Recall or its figures differ from that epoch's line."""
    evals = {}
    for m in _DIFFMM_EVAL.finditer(text):
        k, ep = m.group(2), int(m.group(1))
        if ep in evals:
            raise ValueError(f"DiffMM log: epoch {ep} evaluated twice")
        evals[ep] = {"valid": {f"recall@{k}": float(m.group(3)), f"ndcg@{k}": float(m.group(4))},
                     "test": {f"recall@{k}": float(m.group(5)), f"ndcg@{k}": float(m.group(6))}, "k": k}
    times = [float(m.group(2)) for m in _DIFFMM_TIME.finditer(text)]
    order = sorted(evals)
    out = {
        "epochs_run": len(order),
        "best_epoch": None,
        "stopped_early": False,
        "epoch_train_times_s": times,
        "median_epoch_s": statistics.median(times) if times else None,
        "valid_curve": [[e, evals[e]["valid"][f"recall@{evals[e]['k']}"]] for e in order],
    }
    m = _DIFFMM_BEST_TEST.search(text)
    if m:
        out["reference_best_test"] = {"epoch": int(m.group(1)), f"recall@{DIFFMM_TOPK}": float(m.group(2)),
                                      f"ndcg@{DIFFMM_TOPK}": float(m.group(3)),
                                      f"precision@{DIFFMM_TOPK}": float(m.group(4))}
    m = _DIFFMM_SELECTED.search(text)
    if not m:
        return out
    best, k = int(m.group(1)), m.group(3)
    top = max(v for _, v in out["valid_curve"])
    expected = max(e for e, v in out["valid_curve"] if v == top)
    if best != expected:
        raise ValueError(f"DiffMM log: selected epoch {best}, but the last epoch with the highest validation "
                         f"recall@{k} ({top}) is {expected}")
    valid = {f"recall@{k}": float(m.group(4)), f"ndcg@{k}": float(m.group(5))}
    test = {f"recall@{k}": float(m.group(6)), f"ndcg@{k}": float(m.group(7))}
    if valid != evals[best]["valid"] or test != evals[best]["test"]:
        raise ValueError(f"DiffMM log: the selected epoch {best}'s figures differ from its epoch line")
    out.update(best_epoch=best, stopped_early=m.group(2) == "1", best_valid=valid, test=test)
    return out


def run_diffmm_reference(model: str, seed: int, ours_cfg: dict, args) -> dict:
    """One run of DiffMM's authors' code (patched copy, CPU, one thread) with our settings; the same record
    fields as :func:`run_reference`."""
    src, commit = diffmm_checkout(args.diffmm_mirror, os.path.join(args.scratch, "diffmm"))
    split = diffmm_same_split(args.diffmm_data, os.path.join(args.data_path, shared.DATASET))
    data_dir = diffmm_data_copy(args.diffmm_data, os.path.join(args.scratch, "diffmm-data", DIFFMM_DATA_NAME))
    config = diffmm_reference_args(ours_cfg, seed, data_dir)
    argv = diffmm_argv(config)
    log_path = os.path.join(args.scratch, "logs", f"{shared.row_label(model, args)}__reference__seed{seed}.log")
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    returncode, wall, text = shared.run_logged([sys.executable, "Main.py", *argv], src, log_path)
    record = {"side": "reference", "model": model, "reference_model": shared.MODELS[model]["reference"], "seed": seed,
              "reference": "github " + shared.MODELS[model]["reference_repo"], "reference_commit": commit,
              "config": config, "patches": [d for *_, d in DIFFMM_PATCHES if d],
              "data": {"shared": args.diffmm_data, "copy": data_dir, "files": DIFFMM_DATA_FILES, "same_split": split},
              "command": f"cd {shlex.quote(src)} && OMP_NUM_THREADS=1 python Main.py {shlex.join(argv)}",
              "wall_time_s": round(wall, 1), "log": log_path}
    return shared.finished_record(record, returncode, text, parse_diffmm_log,
                                  "no validation-selected epoch in DiffMM's output")


def cmd_diffmm_reference(args) -> None:
    """The reference side of DiffMM alone, its record written to ``--out`` (not the table's folder): a check
    that the patched code runs, e.g. with ``--set '{"epochs": 2}'``."""
    if os.path.commonpath([os.path.abspath(args.out), shared.RESULTS]) == shared.RESULTS:
        raise SystemExit(f"--out {args.out} is in {shared.RESULTS}: the table reads every file there")
    ours = ours_side.resolve_ours("DiffMM", args.data_path, args.extra)
    record = shared.stamp_record(run_diffmm_reference("DiffMM", args.seed, ours, args))
    shared.write_json(os.path.abspath(args.out), record)
    print(json.dumps({k: v for k, v in record.items() if k not in ("config", "patches", "error")}, indent=1))
    if record["status"] != "ok":
        print(record.get("error"), file=sys.stderr)
        sys.exit(1)


def diffmm_page_lines() -> list[str]:
    """The page's section on DiffMM's reference: where it comes from, every patch, the data, what differs."""
    lines = ["## DiffMM's reference: the authors' code, patched", "",
             "MMRec has no DiffMM; its reference is github HKUDS/DiffMM (`Main.py`, `Model.py`, `DataHandler.py`, "
             "`Params.py`, `Utils/`), extracted from a git snapshot into the scratch folder and patched there at "
             "run time (`diffmm_patch`: each replacement must occur its expected number of times, so a changed "
             "upstream fails before anything runs). The patches:", ""]
    lines += [f"* {d}" for *_, d in DIFFMM_PATCHES if d]
    lines += [
        "",
        "Their model, training and evaluation code is otherwise unchanged. The added validation pass draws no "
        "random number of its own, but each pass over a DataLoader takes one draw from torch's generator, so a "
        "seed's run is not the unpatched run of that seed (nor could a CPU run be a GPU run: the devices draw "
        "different numbers). torch 2.13 still has their `torch.sparse.FloatTensor` (deprecated, a warning) and "
        "scipy 1.12 their `.A`, so neither is patched. Data: the shared DiffMM-layout TikTok folder "
        "(`trnMat.pkl`, `valMat.pkl`, `tstMat.pkl`, `image_feat.npy`, `audio_feat.npy`; the one "
        "`dataset/tiktok-diffmm` was converted from, "
        "and each run checks that both hold the same (user, item) pairs in each part), copied to the scratch "
        "folder with `audio_feat.npy` as their text slot `text_feat.npy`: the copy has no text features, and "
        "`--data tiktok-diffmm` (any name but `tiktok`) takes their two-modality path (image + text slot), with "
        "the README's TikTok arguments otherwise. What remains different: their test and validation mask only "
        "the user's training items (ours here: `test_mask: train`), keep users without training items (as "
        "ours), draw negatives uniformly over all items but the user's training items (as RecBole); their BPR "
        "is the batch sum over the nominal batch size (ours the batch mean); they read the features raw (ours "
        "standardised). Their own `Best epoch` line (the best *test* epoch, the literature's number) is in each "
        "result file as `reference_best_test`, a diagnostic, not in the table.",
        "",
        "```",
        "python benchmarks/reference_check.py run --models DiffMM --seeds 2020 2021 2022 \\",
        "    --diffmm-mirror DIFFMM_GIT_DIR --diffmm-data /work/shared/data/tiktok-diffmm --scratch /tmp/refcheck",
        "```",
        "",
    ]
    return lines
