"""Benchmark models x datasets x seeds as Ray tasks and write leaderboards.

    python run_benchmark.py --models MetaMMF_GCN BPR --datasets mm-ml-100k --seeds 3 --out results/NAME [--epochs=50 ...]
    python run_benchmark.py --file bench.yaml --out results/NAME        # the same from a benchmark YAML file
    python run_benchmark.py --report results/NAME                       # rewrite the leaderboards from trial files
    python run_benchmark.py --file benchmarks/selection/content_reg.yaml  # choose a default on validation (a 'select'
                                                                          # section: a grid, datasets, the rule)
    python run_benchmark.py --report benchmarks/selection/content_reg.yaml  # rewrite its page from the trial files
    python run_benchmark.py --file benchmarks/tuned/mm-ml-100k.yaml     # tuned mode (the file has a 'tune' section):
                                                                        # search each row, then its choice over the seeds

Any other ``--key=value`` sets a RecBole/plugin config key for every trial. Rerunning the
same command resumes: finished trials are kept, only missing (or failed) ones run.
"""

import argparse
import os
import re
import shlex
import sys

import yaml

from recbole_metammf.benchmark.spec import DEFAULT_BASE_SEED, BenchmarkSpec, load_spec


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--file", help="benchmark YAML file (models, datasets, seeds, config_files, config, ...)")
    p.add_argument("--models", nargs="+", help="model names (plugin or RecBole built-in)")
    p.add_argument("--datasets", nargs="+", help="dataset names (atomic files under data_path/NAME)")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds: base_seed, base_seed+1, ... (default 1)")
    p.add_argument("--base_seed", type=int, default=DEFAULT_BASE_SEED, help="first seed")
    p.add_argument("--config_files", nargs="+", default=[], help="YAML config files applied to every trial")
    p.add_argument("--model_config", action="append", default=[], metavar="MODEL=FILE",
                   help="YAML config for one model only, e.g. run_hyper.py's best config (repeatable)")
    p.add_argument("--out", default=None, help="benchmark directory (default results/<file stem> or results/benchmark)")
    p.add_argument("--ray-address", "--ray_address", dest="ray_address", default=None,
                   help="address of an existing Ray cluster (default: start Ray locally on every core)")
    p.add_argument("--cpus-per-trial", "--cpus_per_trial", dest="cpus_per_trial", type=int, default=1,
                   help="cores (= torch threads) per trial; parallel trials = cores // this")
    p.add_argument("--force", action="store_true", help="rerun finished trials whose configuration changed")
    p.add_argument("--no-retry-failed", dest="retry_failed", action="store_false", help="keep failed trials as they are")
    p.add_argument("--focus", default=None, help="model whose improvement the leaderboard's last row shows")
    p.add_argument("--report", metavar="DIR", default=None,
                   help="only (re)write the report of DIR (or of a selection file) from its trial files")
    p.add_argument("--verbose", action="store_true", help="show the workers' RecBole logs")
    tuned = p.add_argument_group("tuned mode (recbole_metammf/benchmark/tune.py; on by a benchmark file's 'tune' section)")
    tuned.add_argument("--tuned", action="store_true",
                       help="search each model's space (hyper/<MODEL>.hyper) on validation, then run its best config")
    tuned.add_argument("--configs", type=int, default=None, help="configurations sampled per model (default 8)")
    tuned.add_argument("--rungs", type=int, nargs="*", default=None, metavar="EPOCHS",
                       help="successive-halving epoch budgets, e.g. 10 30 (none: every config to early stopping)")
    return p


_EXPONENT_FLOAT = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def parse_value(text: str):
    """A ``--key=value`` value as RecBole's command line reads it: YAML, and ``1e-3`` a number
    (YAML 1.1 reads a float without a dot as a string, which a model would then fail to use)."""
    value = yaml.safe_load(text)
    if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
        return float(value)
    return value


def parse_overrides(unknown: list) -> dict:
    """``--key=value`` pairs as a config dict (values parsed as YAML, like RecBole's command line)."""
    from recbole_metammf.errors import ConfigError

    out = {}
    for arg in unknown:
        if not arg.startswith("--") or "=" not in arg:
            raise ConfigError(f"unrecognised argument {arg!r} (config keys are given as --key=value)")
        key, value = arg[2:].split("=", 1)
        try:
            out[key] = parse_value(value)
        except yaml.YAMLError as err:
            raise ConfigError(f"--{key}: the value {value!r} is not valid YAML ({getattr(err, 'problem', err)})") from None
    return out


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args, unknown = build_parser().parse_known_args(argv)
    from recbole_metammf.benchmark.select import is_selection_file

    if args.report and is_selection_file(args.report):
        from recbole_metammf.benchmark.select import load_selection, write_selection_report

        sel = load_selection(args.report)
        write_selection_report(sel)
        print(sel["page"])
        return {}
    if args.file and is_selection_file(args.file):
        return _run_selection(args, argv)
    if args.report:
        from recbole_metammf.benchmark.tuned_report import write_any_report

        summaries = write_any_report(args.report, focus=args.focus)
        for d in summaries:
            print(os.path.join(args.report, d, "leaderboard.md"))
        return summaries

    import recbole_metammf  # noqa: F401  (registers the plugin in the driver too)
    from recbole_metammf.benchmark.plan import run_spec

    model_config = {}
    for item in args.model_config:
        model, _, path = item.partition("=")
        model_config[model] = path
    overrides = parse_overrides(unknown)
    if args.file:
        spec = _load_spec_file(args.file, models=args.models, datasets=args.datasets)
        if args.seeds:
            spec.seeds = [args.base_seed + i for i in range(args.seeds)]
        spec.config_files += [os.path.abspath(p) for p in args.config_files]
        spec.config.update(overrides)
        spec.model_config.update({m: os.path.abspath(p) for m, p in model_config.items()})
        default_out = os.path.join("results", os.path.splitext(os.path.basename(args.file))[0])
    else:
        if not args.models or not args.datasets:
            from recbole_metammf.errors import ConfigError

            raise ConfigError("give --models and --datasets, or --file")
        spec = BenchmarkSpec(models=args.models, datasets=args.datasets,
                             seeds=[args.base_seed + i for i in range(args.seeds or 1)],
                             config_files=args.config_files, config=overrides, model_config=model_config)
        default_out = os.path.join("results", "benchmark")
    if spec.tune or args.tuned or args.configs is not None or args.rungs is not None:
        from recbole_metammf.benchmark.tune import check_tune_settings

        given = {k: v for k, v in (("configs", args.configs), ("rungs", args.rungs)) if v is not None}
        spec.tune = check_tune_settings({**spec.tune, **given}, source=args.file or "the command line")
        if args.file:  # tuned boards live under results/tuned/
            default_out = os.path.join("results", "tuned", os.path.splitext(os.path.basename(args.file))[0])
    out = args.out or default_out
    from recbole_metammf.checks import check_trials

    check_trials(spec.trials())  # models, datasets and config keys, before Ray or any trial starts
    command = "python run_benchmark.py " + " ".join(shlex.quote(a) for a in argv)
    try:
        summary = run_spec(spec, out, ray_address=args.ray_address, cpus_per_trial=args.cpus_per_trial,
                         force=args.force, retry_failed=args.retry_failed, verbose=args.verbose, command=command)
    except KeyboardInterrupt:
        raise SystemExit(130)
    from recbole_metammf.benchmark.tuned_report import write_any_report

    if args.focus:
        write_any_report(out, focus=args.focus)
    copied = f", copied {len(summary['reused'])}" if summary.get("reused") else ""
    unsaved = (f"; {len(summary['unsaved'])} trial file(s) could not be written (run again to rerun them): "
               + " ".join(summary["unsaved"])) if summary.get("unsaved") else ""
    print(f"ran {len(summary['ran'])} trial(s) ({len(summary['failed'])} failed), kept {len(summary['skipped'])}"
          f"{copied}; leaderboards in {out}/<dataset>/leaderboard.md{unsaved}")
    return summary


def _run_selection(args, argv) -> dict:
    """A selection file: its grid's missing trials (each candidate a plain benchmark), then its page."""
    import recbole_metammf  # noqa: F401  (registers the plugin in the driver too)
    from recbole_metammf.benchmark.select import load_selection, run_selection

    sel = load_selection(args.file)
    command = "python run_benchmark.py " + " ".join(shlex.quote(a) for a in argv)
    try:
        summary = run_selection(sel, command=command, ray_address=args.ray_address, cpus_per_trial=args.cpus_per_trial,
                                force=args.force, retry_failed=args.retry_failed, verbose=args.verbose)
    except KeyboardInterrupt:
        raise SystemExit(130)
    print(f"ran {len(summary['ran'])} trial(s) ({len(summary['failed'])} failed), kept {len(summary['skipped'])}; "
          f"the choice: {sel['page']}")
    return summary


def _load_spec_file(path: str, **overrides):
    """``load_spec``, with a file that is missing or not a valid benchmark file as one ConfigError."""
    from recbole_metammf.errors import ConfigError

    if not os.path.isfile(path):
        raise ConfigError(f"benchmark file {path}: no such file")
    try:
        return load_spec(path, **overrides)
    except (ValueError, TypeError, yaml.YAMLError) as err:
        message = str(err) if path in str(err) else f"benchmark file {path}: {err}"
        raise ConfigError(message.replace("\n", " ")) from err


if __name__ == "__main__":
    from recbole_metammf.entry import run_cli, stop_on_signals

    stop_on_signals()  # Ctrl-C, `kill -INT` or `kill PID` stop it cleanly, also as a background job
    sys.exit(run_cli(main))
