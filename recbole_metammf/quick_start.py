"""Run a model through RecBole's own pipeline, with the plugin loaded.

Nothing here re-implements RecBole's training loop: :func:`run` makes sure the
built-in dataset exists and hands over to ``recbole.quick_start.run``, and
:func:`objective_function` is RecBole's, re-exported for ``HyperTuning``. The one
exception is ``diagnose_best_test_epoch: True`` (``evaluation.py``): RecBole's
``run_recbole`` has no hook for the trainer, so :func:`run_recbole_with_diagnostic`
takes its steps one by one (the same calls, in the same order) and attaches the
diagnostic to the trainer.
"""

from __future__ import annotations

import argparse
import os
import sys
from logging import getLogger

from recbole.config import Config
from recbole.quick_start import objective_function  # noqa: F401  (re-exported for HyperTuning)
from recbole.quick_start import run as recbole_run

from recbole_metammf.allocator import tune_allocator
from recbole_metammf.checks import BUILTIN_DATASET, preflight
from recbole_metammf.errors import ConfigError, DistributedError
from recbole_metammf.evaluation import DIAGNOSTIC_KEY, TestEpochDiagnostic, diagnostic_requested, format_diagnostic

DEFAULT_MODEL = "MetaMMF_GCN"


def dataset_dir(model: str, dataset: str, config_file_list=None, config_dict=None) -> str:
    """``{data_path}/{dataset}`` as RecBole will resolve it for this run."""
    config = Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
    return config["data_path"]


def ensure_builtin_dataset(model: str, dataset: str, config_file_list=None, config_dict=None) -> None:
    """Build the built-in multimodal dataset from RecBole's bundled ml-100k on first use (offline)."""
    if dataset != BUILTIN_DATASET:
        return
    path = dataset_dir(model, dataset, config_file_list, config_dict)
    if os.path.isfile(os.path.join(path, f"{dataset}.inter")):
        return
    from dataset_converters.ml100k import build_ml100k

    print(f"Building the built-in dataset '{dataset}' from RecBole's ml-100k into {path} (once) ...", flush=True)
    build_ml100k(os.path.dirname(os.path.normpath(path)), name=dataset)


def run(
    model: str = DEFAULT_MODEL,
    dataset: str = BUILTIN_DATASET,
    config_file_list=None,
    config_dict=None,
    saved: bool = True,
    nproc: int = 1,
    world_size: int = -1,
    ip: str = "localhost",
    port: str = "5678",
    group_offset: int = 0,
    cmd_line: bool = False,
):
    """Train and evaluate ``model`` on ``dataset``; returns RecBole's result dict.

    First :func:`~recbole_metammf.checks.preflight` checks the model name, the config
    (with ``cmd_line``, the process's ``--key=value`` arguments too, as RecBole reads
    them) and the dataset, raising one :class:`~recbole_metammf.errors.UserError` for
    a mistake.

    With ``nproc > 1`` or ``world_size > 0`` this is RecBole's multi-process path
    (torch.distributed: NCCL on GPUs, gloo on CPU, see ``compat.py``), with one
    difference: the spawned processes run :func:`_run_recboles`, which imports the
    plugin before handing over to RecBole's ``run_recboles``. RecBole spawns its own
    function, so a child would only know the plugin's models if the parent's main
    module happened to import the plugin (true for ``run_recbole.py``, not for
    ``python -m recbole_metammf``, pytest, notebooks or Ray workers).
    """
    config = preflight(model, dataset, config_file_list, config_dict, cmd_line=cmd_line)
    diagnose = diagnostic_requested(config)
    if diagnose and (nproc != 1 or world_size > 0):
        raise ConfigError("diagnose_best_test_epoch runs in a single process: drop it or run with --nproc=1")
    ensure_builtin_dataset(model, dataset, config_file_list, config_dict)
    if diagnose:
        return run_recbole_with_diagnostic(model, dataset, config_file_list, config_dict, saved=saved)
    if nproc == 1 and world_size <= 0:
        return recbole_run(model, dataset, config_file_list=config_file_list, config_dict=config_dict, saved=saved)
    import torch.multiprocessing as mp

    world_size = nproc if world_size == -1 else world_size
    queue = mp.get_context("spawn").SimpleQueue()
    config_dict = dict(config_dict or {})
    config_dict.update({"world_size": world_size, "ip": ip, "port": port, "nproc": nproc, "offset": group_offset})
    kwargs = {"config_dict": config_dict, "queue": queue, "saved": saved}
    try:
        mp.spawn(_run_recboles, args=(model, dataset, config_file_list, kwargs), nprocs=nproc, join=True)
    except (mp.ProcessRaisedException, mp.ProcessExitedException) as err:
        failure = distributed_failure(err, group_offset, world_size)
        if failure is None:
            raise  # a bug in a process of this node: its traceback
        raise failure from err  # --debug shows the rank's traceback as the cause
    return None if queue.empty() else queue.get()  # rank 0's result (None on other nodes)


def run_recbole_with_diagnostic(model, dataset, config_file_list=None, config_dict=None, saved: bool = True) -> dict:
    """``recbole.quick_start.run_recbole`` step for step (single process), with a
    :class:`~recbole_metammf.evaluation.TestEpochDiagnostic` on the trainer.

    Returns RecBole's result dict (the test result of the best-validation checkpoint, as
    without the diagnostic) plus ``result[DIAGNOSTIC_KEY]``: the best test epoch and its
    scores, labelled as a diagnostic.
    """
    from recbole.quick_start import quick_start as rq

    config = rq.Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
    rq.init_seed(config["seed"], config["reproducibility"])
    rq.init_logger(config)
    logger = getLogger()
    logger.info(sys.argv)
    logger.info(config)
    data = rq.create_dataset(config)
    logger.info(data)
    train_data, valid_data, test_data = rq.data_preparation(config, data)
    rq.init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    net = rq.get_model(config["model"])(config, train_data._dataset).to(config["device"])
    logger.info(net)
    transform = rq.construct_transform(config)
    flops = rq.get_flops(net, data, config["device"], logger, transform)
    logger.info(rq.set_color("FLOPs", "blue") + f": {flops}")
    trainer = rq.get_trainer(config["MODEL_TYPE"], config["model"])(config, net)
    diagnostic = TestEpochDiagnostic(trainer, test_data)
    best_valid_score, best_valid_result = trainer.fit(
        train_data, valid_data, saved=saved, show_progress=config["show_progress"], callback_fn=diagnostic
    )
    test_result = trainer.evaluate(test_data, load_best_model=saved, show_progress=config["show_progress"])
    logger.info("The running environment of this training is as follows:\n" + rq.get_environment(config).draw())
    logger.info(rq.set_color("best valid ", "yellow") + f": {best_valid_result}")
    logger.info(rq.set_color("test result", "yellow") + f": {test_result}")
    summary = diagnostic.summary()
    if summary is not None:
        logger.info("\n".join(format_diagnostic(summary)))
    return {
        "best_valid_score": best_valid_score,
        "valid_score_bigger": config["valid_metric_bigger"],
        "best_valid_result": best_valid_result,
        "test_result": test_result,
        DIAGNOSTIC_KEY: summary,
    }


# the last line of a process's traceback when torch.distributed lost a peer or waited too long for one
_PEER_LOST = ("Connection closed by peer", "Connection reset by peer", "Timed out", "timed out", "DistStoreError",
              "DistNetworkError", "DistBackendError", "Socket Timeout", "Broken pipe")


def distributed_failure(err, group_offset: int, world_size: int):
    """The :class:`DistributedError` (one line) for a spawned process's failure caused by another process
    of the run (gone, unreachable, or silent past ``ddp_timeout``), or None for anything else."""
    import torch.multiprocessing as mp

    rank = group_offset + err.error_index
    if isinstance(err, mp.ProcessExitedException):
        how = f"was killed by {err.signal_name}" if err.signal_name else f"exited with status {err.exit_code}"
        return DistributedError(f"multi-process run: this node's process of rank {rank} {how}")
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    if not any(marker in last for marker in _PEER_LOST):
        return None
    cause = last.split("] ", 1)[-1] if "] " in last else last  # drop gloo's source location
    cause = cause.split(" This is typically caused")[0]
    return DistributedError(
        f"multi-process run stopped: rank {rank} of {world_size} lost another process of the run "
        f"(killed, crashed, unreachable, or silent for longer than ddp_timeout): {cause}"
    )


def _run_recboles(rank, *args):
    """RecBole's ``run_recboles`` in a spawned process, with the plugin registered first.

    On CPU the node's cores are shared out between its processes (``cores // nproc``
    torch threads each) instead of every process using them all.
    """
    import torch
    from recbole.quick_start.quick_start import run_recboles

    # The plugin is registered already: this function reached the spawned process by reference
    # (recbole_metammf.quick_start._run_recboles), so importing it ran recbole_metammf/__init__.py first.

    tune_allocator()
    if not torch.cuda.is_available():
        nproc = args[-1]["config_dict"].get("nproc", 1)
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, nproc)))
    run_recboles(rank, *args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Train and evaluate a recommender (plugin or RecBole built-in) with RecBole. "
        "Any other --key=value sets a RecBole/plugin config key.",
    )
    parser.add_argument("--model", "-m", default=DEFAULT_MODEL, help="model name, e.g. MetaMMF_GCN, MetaMMF_MF, BPR, LightGCN")
    parser.add_argument("--dataset", "-d", default=BUILTIN_DATASET, help="dataset name (atomic files under data_path/NAME)")
    parser.add_argument("--config_files", default=None, help="space-separated YAML config files")
    parser.add_argument("--nproc", type=int, default=1, help="number of processes (torch.distributed)")
    parser.add_argument("--ip", default="localhost", help="master address for multi-node runs")
    parser.add_argument("--port", default="5678", help="master port")
    parser.add_argument("--world_size", type=int, default=-1, help="total processes over all nodes")
    parser.add_argument("--group_offset", type=int, default=0, help="rank offset of this node")
    return parser


def main(argv=None) -> dict:
    """Run the command line ``argv``; returns RecBole's result dict (raises a UserError for a mistake)."""
    args, _ = build_parser().parse_known_args(argv)
    tune_allocator()  # glibc's malloc reuses a step's blocks instead of faulting them in anew (allocator.py)
    config_files = args.config_files.strip().split() if args.config_files else None
    result = run(
        args.model,
        args.dataset,
        config_file_list=config_files,
        nproc=args.nproc,
        world_size=args.world_size,
        ip=args.ip,
        port=args.port,
        group_offset=args.group_offset,
        cmd_line=True,
    )
    if result is not None:
        getLogger().info(f"test result: {dict(result['test_result'])}")
        print("\nTest results of", args.model, "on", args.dataset)
        for key, value in result["test_result"].items():
            print(f"  {key:>14s}: {value:.4f}")
        if result.get(DIAGNOSTIC_KEY):
            print()
            print("\n".join(format_diagnostic(result[DIAGNOSTIC_KEY], keys=list(result["test_result"]))))
    return result


def cli(argv=None) -> int:
    """The command line's exit status: 0, or 2 after one line for a user's mistake (see ``entry.py``)."""
    from recbole_metammf.entry import run_cli

    return run_cli(main, argv)


if __name__ == "__main__":
    sys.exit(cli(sys.argv[1:]))
