"""Our models against their reference code on the same data (issue 22, item 3).

For each model that MMRec (github enoche/MMRec) also implements, this script

1. writes the TikTok subset converted under ``dataset/`` (``tiktok-diffmm``: our fixed
   train / valid / test split) in MMRec's data layout into a scratch folder outside the project:
   ``NAME.inter`` (tab-separated ``userID itemID x_label``, 0/1/2 = train/valid/test),
   one ``.npy`` per modality with row ``i`` = item ``i`` (visual as ``image_feat.npy``, acoustic as
   ``text_feat.npy``: MMRec has two slots, vision and text), and MMRec's dataset YAML for it;
2. runs MMRec from a checkout of a ``fetch``-ed git snapshot (``git archive`` of the mirror into
   the scratch folder; the commit is recorded) with our model YAML's hyper-parameters where both
   sides have the setting (``refcheck/shared.py``'s ``MODELS`` names the pairs), the seed given here, one thread,
   early stopping on validation Recall@20; MMRec's log is parsed for the test Recall@20 / NDCG@20
   at the best-validation epoch and the training time of every epoch;
3. runs ours (``recbole_metammf.benchmark.trial.run_trial``, the pipeline ``run_benchmark.py``
   runs) on the same converted data and settings, one thread, ``test_mask: train`` when the plugin
   has that key (on this subset validation and test users are disjoint: it changes nothing);
4. writes ``benchmarks/reference_check.md`` and ``.csv`` from every result file under
   ``benchmarks/reference_check/`` (one JSON per side / model / seed; a run whose file exists is
   not run again, so later sessions add models and seeds).

DiffMM is not in MMRec: its reference is the authors' code (github HKUDS/DiffMM), extracted from a git
snapshot into the scratch folder and patched there at run time (``refcheck/diffmm_side.py``'s ``DIFFMM_PATCHES``: CPU instead of CUDA,
validation on ``valMat.pkl`` every epoch beside their test, early stopping on it, epoch timing, a final line
with the validation-selected epoch's test figures), run on a copy of the shared DiffMM-layout TikTok folder
our ``tiktok-diffmm`` was converted from (each run checks both hold the same split); its output is parsed
into the same record fields (``run_diffmm_reference``).

One training at a time (the machine's cores are shared). Usage::

    python benchmarks/reference_check.py run --models LightGCN VBPR --seeds 2020 2021 2022
    python benchmarks/reference_check.py run --models DiffMM --seeds 2020 2021 2022   # the authors' DiffMM
    python benchmarks/reference_check.py diffmm-reference --seed 2020 --set '{"epochs": 2}' --out /tmp/x.json
    python benchmarks/reference_check.py table          # rewrite the md / csv from the JSONs

MMRec's needs beyond the project's: ``lmdb`` (``pip install lmdb``; MMRec's dataset module
imports it) and ``torch_geometric`` (``pip install torch_geometric==2.8.0``, pure Python, leaves torch
as it is; MMRec's GRCN, MMGCN and DRAGON import it). MMRec's ``utils/data_utils.py`` imports ``torchvision`` for raw images, which no
model here uses (``use_raw_features: False``) and whose wheel would replace the project's torch:
the driver gives MMRec a stand-in module for it whose functions raise if called. MMRec's
``utils/metrics.py`` uses ``np.float``, which numpy 1.24 removed: the driver restores the alias
(``float``, what it always meant). MMRec's LATTICE calls ``.cuda()`` on its raw-content graphs
whatever ``use_gpu`` says: on a machine without CUDA the driver makes ``Tensor.cuda`` return the
tensor itself (it stays on the CPU, where everything else is).

The parts, in ``benchmarks/refcheck/`` (each imports only those listed before it): ``shared.py`` (paths, the
models and how their settings meet, running a side and recording it), ``ours_side.py``, ``mmrec_side.py``,
``diffmm_side.py`` (the authors' DiffMM) and ``page.py`` (the page, the table and the written explanations).
This file is the command line: which runs are missing or reusable, and running them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:  # loaded by path (the tests), not run as a script
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from refcheck import diffmm_side, mmrec_side, ours_side, page, shared  # noqa: E402  (benchmarks/refcheck/)


def reusable_run(model: str, seed: int, side: str, args) -> dict | None:
    """For a tagged run, an earlier run of the same side and seed that this one would repeat, marked
    ``reused_from``, instead of the same run again; None when there is none.

    * The reference: the untagged run or a tagged row's unpatched run, when MMRec would be given the same config
      and there is no ``--reference-patch`` (DiffMM's authors' runs are never reused).
    * Ours: the untagged run when its config (our overrides) is the same; or any tagged row's run of the
      model (``MODEL@TAG``) with the same config and the same ``code_digest`` as this checkout's code (a row
      that changes only the reference, such as a patch, needs no second run of ours). Untagged runs are older
      than the digest and stand for the code of their row. A row with ``--ours-patch`` reuses only a run with the
      same patch, and a patched run is never another row's.
    A failed run is never reused."""
    if not getattr(args, "tag", None):
        return None
    if side == "reference" and (shared.MODELS[model].get("reference_repo") or getattr(args, "reference_patch", None)):
        return None
    if side == "ours":
        config = ours_side.ours_config(model, args.data_path, args.extra)
    else:
        checkout = os.path.join(args.scratch, "mmrec")
        if getattr(args, "mirror", None):  # a fresh scratch has no checkout yet, and MMRec's model YAML is in the config
            mmrec_side.mmrec_checkout(args.mirror, checkout)
        ours = ours_side.resolve_ours(model, args.data_path, args.extra)
        config = mmrec_side.mmrec_config(model, ours, seed, os.path.join(args.scratch, "data"),
                                         mmrec_side.read_mmrec_model_yaml(checkout, shared.MODELS[model]["reference"]))
    base = shared.result_path(model, side, seed)
    candidates = [base] if os.path.isfile(base) else []
    digest = None
    this = shared.result_path(shared.row_label(model, args), side, seed)
    results = shared.RESULTS
    tagged = [os.path.join(results, name) for name in sorted(os.listdir(results))
              if name.startswith(f"{model}@") and name.endswith(f"__{side}__seed{seed}.json")] if os.path.isdir(results) else []
    candidates += [path for path in tagged if path != this]
    for path in candidates:
        with open(path) as f:
            record = json.load(f)
        if record.get("status") != "ok" or record.get("config") != config:
            continue
        if side == "ours" and record.get("ours_patch") != getattr(args, "ours_patch", None):
            continue  # a patched run of ours is its own row's, and a patched row needs its own
        if side == "reference":
            if record.get("reference_patch"):  # a patched run is its own row's
                continue
        elif path != base:  # ours, a tagged row's run: only on the same code
            if not record.get("code_digest"):
                continue
            digest = digest or ours_side.ours_code_digest(shared.MODELS[model]["ours"])
            if record["code_digest"] != digest:
                continue
        source = record.get("reused_from") or os.path.basename(path)
        return {**record, "reused_from": source}
    return None


def cmd_run(args) -> None:
    for flag in ("reference_patch", "ours_patch"):
        if getattr(args, flag, None) and not getattr(args, "tag", None):
            raise SystemExit(f"reference_check: --{flag.replace('_', '-')} needs a --tag (its rows are not the "
                             "plain run's)")
    layout = mmrec_side.write_mmrec_layout(os.path.join(args.data_path, shared.DATASET), shared.DATASET,
                                           os.path.join(args.scratch, "data"))
    print(f"MMRec layout: {layout['folder']} ({layout['n_users']} users, {layout['n_items']} items, "
          f"rows per x_label {layout['rows_per_label']})", flush=True)
    deadline = time.time() + args.budget_minutes * 60 if args.budget_minutes else None
    asked = getattr(args, "sides", None) or ("reference", "ours")
    sides = [s for s in ("reference", "ours") if s in asked]  # the reference first: its failures show early
    for seed in args.seeds:  # seed-major: every model gets its first seed before any gets a second
        for model in args.models:
            for side in sides:
                path = shared.result_path(shared.row_label(model, args), side, seed)
                if os.path.isfile(path):
                    with open(path) as f:
                        if json.load(f).get("status") == "ok":
                            continue
                if deadline is not None and time.time() > deadline:
                    print(f"budget spent: {model} {side} seed {seed} not started", flush=True)
                    continue
                print(f"{datetime.now():%H:%M:%S} {model} {side} seed {seed} ...", flush=True)
                same = reusable_run(model, seed, side, args)
                if same is not None:
                    record = same
                elif side == "ours":
                    record = ours_side.run_ours(model, seed, args)
                else:
                    diffmm = shared.MODELS[model].get("reference_repo") == "HKUDS/DiffMM"
                    runner = diffmm_side.run_diffmm_reference if diffmm else mmrec_side.run_reference
                    record = runner(model, seed, ours_side.resolve_ours(model, args.data_path, args.extra), args)
                if getattr(args, "tag", None):
                    record.update(model=shared.row_label(model, args), tag=args.tag, set=args.extra)
                # a reused run keeps its stamps
                shared.write_json(path, record if same is not None else shared.stamp_record(record))
                test = record.get("test", {})
                print(f"  {record['status']}: test recall@20 {test.get('recall@20')} ndcg@20 {test.get('ndcg@20')} "
                      f"best epoch {record.get('best_epoch')} / {record.get('epochs_run')}, "
                      f"median epoch {record.get('median_epoch_s')} s", flush=True)
    page.write_table()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run what is missing, then rewrite the table")
    run.add_argument("--models", nargs="+", default=["LightGCN", "VBPR"], choices=sorted(shared.MODELS))
    run.add_argument("--seeds", nargs="+", type=int, default=[2020, 2021, 2022])
    run.add_argument("--data-path", default=os.path.join(shared.REPO, "dataset"))
    run.add_argument("--scratch", default=shared.DEFAULT_SCRATCH)
    run.add_argument("--mirror", default=mmrec_side.DEFAULT_MIRROR)
    run.add_argument("--diffmm-mirror", default=diffmm_side.DEFAULT_DIFFMM_MIRROR,
                     help="git snapshot of github HKUDS/DiffMM")
    run.add_argument("--diffmm-data", default=diffmm_side.DEFAULT_DIFFMM_DATA, help="the DiffMM-layout TikTok folder")
    run.add_argument("--tag", default=None, help="name this run's rows MODEL@TAG (own files and row), e.g. with a "
                                                  "--set that both sides get")
    run.add_argument("--budget-minutes", type=float, default=None, help="start no run after this many minutes")
    run.add_argument("--sides", nargs="+", default=["reference", "ours"], choices=["reference", "ours"],
                     help="run only these sides (e.g. `--sides ours`: ours resumes after a stop, the reference "
                          "restarts from its first epoch)")
    run.add_argument("--reference-patch", default=None, choices=sorted(mmrec_side.REFERENCE_PATCHES),
                     help="run the reference from a copy with this change (REFERENCE_PATCHES; needs --tag)")
    run.add_argument("--ours-patch", default=None, choices=sorted(ours_side.OURS_PATCHES),
                     help="run ours with this change, in its process only (OURS_PATCHES; needs --tag)")
    run.add_argument("--set", dest="extra", default="{}", type=json.loads,
                     help="JSON settings for both sides (given to ours, mapped to MMRec's keys)")
    sub.add_parser("table", help="rewrite the md / csv from the result files")
    sub.add_parser("test-curves", help="add MMRec's per-epoch test curve to records written without it, from their logs")
    dr = sub.add_parser("diffmm-reference", help="DiffMM's reference side alone, its record to --out")
    dr.add_argument("--seed", type=int, default=2020)
    dr.add_argument("--out", required=True)
    dr.add_argument("--data-path", default=os.path.join(shared.REPO, "dataset"))
    dr.add_argument("--scratch", default=shared.DEFAULT_SCRATCH)
    dr.add_argument("--diffmm-mirror", default=diffmm_side.DEFAULT_DIFFMM_MIRROR)
    dr.add_argument("--diffmm-data", default=diffmm_side.DEFAULT_DIFFMM_DATA)
    dr.add_argument("--set", dest="extra", default="{}", type=json.loads, help="JSON settings for ours, mapped")
    d = sub.add_parser("mmrec-driver")
    d.add_argument("--src", required=True)
    d.add_argument("--model", required=True)
    d.add_argument("--dataset", required=True)
    d.add_argument("--config", required=True)
    o = sub.add_parser("ours-driver")
    o.add_argument("--model", required=True)
    o.add_argument("--seed", type=int, required=True)
    o.add_argument("--config", required=True)
    o.add_argument("--out", required=True)
    o.add_argument("--snapshots", default=None, help="keep resume snapshots here (resume.py)")
    o.add_argument("--patch", default=None, choices=sorted(ours_side.OURS_PATCHES),
                   help="an OURS_PATCHES change for this run")
    o.add_argument("--snapshot-every-s", type=float, default=300.0, help="at most one snapshot per this many seconds")
    args = parser.parse_args(argv)
    if args.cmd in ("run", "diffmm-reference"):
        args.data_path = os.path.abspath(args.data_path)
        args.scratch = os.path.abspath(args.scratch)
        if os.path.commonpath([args.scratch, shared.REPO]) == shared.REPO:
            parser.error(f"--scratch {args.scratch} is inside the project; the reference code must stay outside it")
        if args.cmd == "run":
            cmd_run(args)
        else:
            diffmm_side.cmd_diffmm_reference(args)
    elif args.cmd == "table":
        page.write_table()
    elif args.cmd == "test-curves":
        print(f"{len(mmrec_side.cmd_test_curves())} record(s) given their test curve")
    elif args.cmd == "mmrec-driver":
        mmrec_side.cmd_mmrec_driver(args)
    else:
        ours_side.cmd_ours_driver(args)


if __name__ == "__main__":
    main()
