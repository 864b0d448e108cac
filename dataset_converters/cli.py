"""Argument parsing and dispatch for ``python -m dataset_converters``.

Each subcommand turns one raw layout into ``DATA_DIR/NAME/`` and prints what it
wrote and the command to train on it.  Bad input exits with status 2 and one
line ``error: <file>: <problem>``, without a traceback.
"""

import argparse
import sys

from dataset_converters.safe_io import ConversionError

KINDS_MMGCN = ("movielens", "tiktok", "kwai")


def _share(text):
    """argparse type of --cold-items: a share strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be a share between 0 and 1 (exclusive), got {text!r}")
    return value


def _add_common(p, default_name, src_required=True, splits=("original", "random")):
    if src_required:
        p.add_argument("--src", required=True, help="directory of the raw files")
    p.add_argument("--out", required=True, help="DATA_DIR: the dataset goes to DATA_DIR/NAME/")
    p.add_argument("--name", default=default_name,
                   help=f"dataset name (default {default_name or 'the .inter file name'})")
    if splits:
        p.add_argument("--split", choices=splits, default=None,
                       help="fixed split to write (default: original when the raw data has "
                            "one, else random)")
        p.add_argument("--seed", type=int, default=2020, help="seed of the random split")
        p.add_argument("--pca", type=int, default=None, metavar="DIM",
                       help="reduce every dense modality to DIM with a deterministic PCA")
    p.add_argument("--cold-items", dest="cold_items", type=_share, default=None, metavar="SHARE",
                   help="hold out SHARE (e.g. 0.1) of the items entirely: their interactions go to "
                        "valid and test only (a cold-start benchmark; converters that write the split)")


def build_parser():
    """The argparse parser with one subcommand per raw layout."""
    parser = argparse.ArgumentParser(prog="python -m dataset_converters", description=__doc__)
    sub = parser.add_subparsers(dest="kind", required=True)
    for kind in KINDS_MMGCN:
        _add_common(sub.add_parser(kind, help=f"{kind} in the MMGCN full or sample layout"), kind)
    _add_common(sub.add_parser("microlens", help="MicroLens-50k pairs + titles"), "microlens",
                splits=("random", "chrono"))
    sub.choices["microlens"].add_argument(
        "--text", choices=("auto", "minilm", "tfidf"), default="auto",
        help="title embedding: all-MiniLM-L6-v2 if installed (auto), or numpy TF-IDF + SVD")
    sub.choices["microlens"].add_argument("--text-dim", type=int, default=64,
                                          help="dimension of the TF-IDF + SVD text vector")
    _add_common(sub.add_parser("diffmm", help="DiffMM / MMSSL layout (trnMat/valMat/tstMat.pkl + "
                                              "image/audio/text_feat.npy), its split kept"),
                "tiktok-diffmm", splits=())
    _add_common(sub.add_parser("mmrec", help="MMRec layout (NAME.inter with x_label + "
                                             "image/text_feat.npy), its split kept"),
                None, splits=())
    _add_common(sub.add_parser("ml100k", help="RecBole's bundled ml-100k (no --src needed)"),
                "mm-ml-100k", src_required=False, splits=())
    syn = sub.add_parser("synthetic", help="generate raw MMGCN-layout data at a real shape")
    syn.add_argument("--like", choices=KINDS_MMGCN, required=True)
    syn.add_argument("--scale", type=float, default=1.0, help="fraction of the real size")
    syn.add_argument("--out", required=True, help="directory for the raw files")
    syn.add_argument("--seed", type=int, default=0)
    return parser


def _convert(args):
    """Run the subcommand; return the printed report."""
    from dataset_converters.recbole_files import summary, write_dataset

    if args.kind == "synthetic":
        from dataset_converters.synthetic import generate

        return generate(args.like, args.out, scale=args.scale, seed=args.seed)
    if args.cold_items is not None and args.kind in ("ml100k", "diffmm", "mmrec"):
        why = ("ml100k writes no split (RecBole splits it by eval_args)" if args.kind == "ml100k"
               else f"{args.kind} keeps the data's own split")
        raise ConversionError(f"{getattr(args, 'src', None) or args.kind}: --cold-items needs a split "
                              f"the converter writes; {why}")
    if args.kind == "ml100k":
        from dataset_converters.ml100k import convert_ml100k

        ds = convert_ml100k(name=args.name)
    elif args.kind == "diffmm":
        from dataset_converters.diffmm import convert_diffmm

        ds = convert_diffmm(args.src, name=args.name)
    elif args.kind == "mmrec":
        from dataset_converters.mmrec import convert_mmrec

        ds = convert_mmrec(args.src, name=args.name)
    elif args.kind == "microlens":
        from dataset_converters.microlens import convert_microlens

        ds = convert_microlens(args.src, name=args.name, split=args.split or "random",
                               seed=args.seed, pca=args.pca, text=args.text,
                               text_dim=args.text_dim, cold_items=args.cold_items)
    else:
        from dataset_converters.mmgcn import convert_mmgcn

        ds = convert_mmgcn(args.kind, args.src, name=args.name, split=args.split,
                           seed=args.seed, pca=args.pca, cold_items=args.cold_items)
    path = write_dataset(ds, args.out)
    return summary(ds, path, args.out)


def main(argv=None):
    """Entry point; returns the process exit status.

    Bad input: one line ``error: ...`` on stderr and status 2. ``--debug`` (anywhere on the
    command line) or ``RECBOLE_METAMMF_DEBUG=1`` shows its traceback instead.
    """
    import os

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("RECBOLE_METAMMF_DEBUG", "").strip().lower() not in (
        "", "0", "false", "no")
    args = build_parser().parse_args([a for a in argv if a != "--debug"])
    try:
        print(_convert(args))
    except ConversionError as e:
        if debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
