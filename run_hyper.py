"""Search a model's hyper-parameters on validation and write the best config as YAML.

    python run_hyper.py --model MetaMMF_GCN --dataset mm-ml-100k --params_file hyper/MetaMMF_GCN.hyper \\
        [--tool hyperopt|ray] [--algo exhaustive|random|bayes] [--max_evals N] [--seed 2020] \\
        [--config_files a.yaml ...] [--output results/hyper/MetaMMF_GCN-mm-ml-100k.yaml] [--epochs=50 ...]

``--tool hyperopt`` uses RecBole's HyperTuning; ``--tool ray`` uses Ray Tune with ASHA early
stopping (``--ray-address`` for a cluster). Any other ``--key=value`` is a fixed config key.
The output YAML works with ``run_recbole.py --config_files=FILE`` and
``run_benchmark.py --model_config MODEL=FILE``. Stopped with Ctrl-C (or ``kill PID``), a hyperopt search
writes the best of the points it finished, says so in the YAML's header, and exits with status 130.
"""

import argparse
import os
import shlex
import sys

from run_benchmark import parse_overrides


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", "-m", required=True)
    p.add_argument("--dataset", "-d", required=True)
    p.add_argument("--params_file", default=None, help="search space (.hyper); default hyper/<MODEL>.hyper")
    p.add_argument("--tool", choices=["hyperopt", "ray"], default="hyperopt")
    p.add_argument("--algo", choices=["exhaustive", "random", "bayes"], default="exhaustive",
                   help="hyperopt algorithm (exhaustive needs choice-only spaces)")
    p.add_argument("--max_evals", type=int, default=None,
                   help="points to try (default: the whole grid for exhaustive / choice-only spaces, else 20)")
    p.add_argument("--seed", type=int, default=2020, help="the seed of every point")
    p.add_argument("--config_files", nargs="+", default=[], help="fixed YAML config files")
    p.add_argument("--output", default=None, help="best-config YAML (default results/hyper/<MODEL>-<DATASET>.yaml)")
    p.add_argument("--cpus-per-trial", "--cpus_per_trial", dest="cpus_per_trial", type=int, default=1)
    p.add_argument("--ray-address", "--ray_address", dest="ray_address", default=None)
    return p


def _search(args, params_file, config_files, config_dict, choice_only) -> dict:
    from recbole_metammf.benchmark.hyper import search_hyperopt, search_ray
    from recbole_metammf.errors import ConfigError

    if args.tool == "ray":
        return search_ray(args.model, args.dataset, params_file, args.seed, config_files, config_dict,
                          max_evals=args.max_evals, cpus_per_trial=args.cpus_per_trial, ray_address=args.ray_address)
    if args.algo == "exhaustive" and not choice_only:
        raise ConfigError(f"{params_file} has non-choice parameters: use --algo random or bayes")
    return search_hyperopt(args.model, args.dataset, params_file, args.seed, config_files, config_dict,
                           algo=args.algo, max_evals=args.max_evals or 20)


def main(argv=None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args, unknown = build_parser().parse_known_args(argv)
    import recbole_metammf  # noqa: F401  (registers the plugin)
    from recbole_metammf.benchmark.hyper import parse_space, write_best_config
    from recbole_metammf.quick_start import ensure_builtin_dataset

    from recbole_metammf.checks import check_keys, preflight
    from recbole_metammf.errors import ConfigError
    from recbole_metammf.registry import get_model

    here = os.path.dirname(os.path.abspath(__file__))
    params_file = args.params_file or os.path.join(here, "hyper", f"{args.model}.hyper")
    config_files = [os.path.abspath(p) for p in args.config_files] or None
    config_dict = parse_overrides(unknown)
    config = preflight(args.model, args.dataset, config_files, config_dict)  # model, config, dataset
    if not os.path.isfile(params_file):
        raise ConfigError(f"search space {params_file}: no such file (give --params_file, or write hyper/{args.model}.hyper)")
    try:
        space = parse_space(params_file)
    except ValueError as err:
        message = str(err) if params_file in str(err) else f"search space {params_file}: {err}"
        raise ConfigError(message) from err
    if config["check_config_keys"]:
        check_keys({name: f"search space {params_file}" for name in space}, get_model(args.model))
    ensure_builtin_dataset(args.model, args.dataset, config_files, config_dict)
    choice_only = all(kind == "choice" for kind, _ in space.values())
    try:
        result = _search(args, params_file, config_files, config_dict, choice_only)
    except KeyboardInterrupt:
        print("Interrupted before any point finished: nothing written.", file=sys.stderr)
        raise SystemExit(130) from None
    output = args.output or os.path.join("results", "hyper", f"{args.model}-{args.dataset}.yaml")
    command = "python run_hyper.py " + " ".join(shlex.quote(a) for a in argv)
    write_best_config(output, result, args.model, args.dataset, args.seed, command)
    if result.get("interrupted"):
        print(f"Interrupted after {len(result['points'])} finished point(s); the best of them: {result['best_params']} "
              f"(validation {result['best_valid_score']}) -> {output}", file=sys.stderr)
        raise SystemExit(130)
    print(f"best {result['best_params']} (validation {result['best_valid_score']}) -> {output}")
    return result


if __name__ == "__main__":
    from recbole_metammf.entry import run_cli, stop_on_signals

    stop_on_signals()  # Ctrl-C or `kill PID` keep the finished points (hyperopt; Ray Tune stops its own way)
    sys.exit(run_cli(main))
