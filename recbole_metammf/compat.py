"""What RecBole 1.2.1 needs on today's stack, in one place.

Every change RecBole needs to run this plugin sits here, each with its reason.
:func:`apply` is idempotent and is called once by ``import recbole_metammf``.

1. **Plugin configuration layers.** RecBole's ``Config`` reads YAML defaults only
   from its own ``properties/`` folder. We add, in RecBole's priority order
   (later wins): the plugin's ``properties/overall.yaml`` (the paper's protocol,
   applied to every model so baselines run under the same protocol), the plugin
   model YAML, RecBole's own dataset YAML again (so a bundled dataset YAML keeps
   its place above model defaults), the plugin dataset YAML, and a YAML lying
   beside the atomic files (``{data_path}/{dataset}/{dataset}.yaml``, written by
   the converters). User config files, config dicts and the command line stay
   above all of these.

2. **Checkpoints under torch>=2.6.** ``torch.load`` now defaults to
   ``weights_only=True``. RecBole saves its ``Config`` object inside every
   checkpoint with ``pickle_protocol=4`` (whose FRAME opcode the weights-only
   unpickler rejects) and reloads the best checkpoint with a plain
   ``torch.load``. We (a) save checkpoints with torch's default protocol, (b) make
   ``Config`` pickle as plain data plus the model *name* (the class is looked up
   again through RecBole's ``get_model`` on load, so no class reference is ever
   unpickled), and (c) allow-list exactly the few harmless globals that remain
   (RecBole's enums, numpy scalars and dtypes, and the rebuild function of (b)).
   ``weights_only`` stays on for the whole process. (d) RecBole names the best
   checkpoint ``{model}-{time}.pth`` to the second, so two runs of one model
   started in the same second in one folder (seeds launched together) wrote and
   reloaded *one* file: a run could test the other's model, or fail to load it.
   The name gets the process id: ``{model}-{time}-{pid}.pth``.

3. **Distributed training without a GPU.** RecBole hard-codes the NCCL backend
   and CUDA devices when ``local_rank`` is set. Without CUDA we initialise the
   process group with gloo on the CPU, with a timeout of ``ddp_timeout`` seconds
   (``properties/overall.yaml``) for joining and for every collective step, so a
   peer that went silent ends the run instead of hanging it for torch's 30 minutes;
   with CUDA RecBole's own path runs.
   RecBole also wraps the model in ``DistributedDataParallel(model,
   device_ids=[local_rank])``, which torch refuses for a CPU module: on CPU the
   trainer's DDP is built without ``device_ids``. On every device, DDP is told to
   leave the models' non-persistent buffers alone (item modalities, graph
   operators: constant data every rank builds identically from the dataset;
   broadcasting them would cost a copy of every feature matrix per step, and torch
   cannot broadcast the sparse graph tensors at all). Finally every rank must
   reload the *same* best checkpoint for the test: RecBole names it after each
   rank's own clock and process id (``{model}-{time}-{pid}.pth``) and only rank 0 writes it, so rank 0's
   name is broadcast to all ranks and the ranks wait for rank 0's write.

4. **Directories created by several processes at once.** RecBole's ``ensure_dir``
   checks for a directory and then creates it, so two processes starting together
   (the ranks of a multi-process run, parallel trials in one folder) can fail with
   ``FileExistsError: ./log``. Every module that imported it gets a version that
   creates with ``exist_ok=True``.

5. **Item feature rows as read.** While loading ``.item``, RecBole pads a
   ``float_seq`` row shorter than the longest with zeros and gives an item that has
   no row (or an empty cell) a row of zeros, so a ragged or incomplete file cannot
   be told from a valid one afterwards (a multi-hot row may end in zeros). The
   loader is wrapped to keep, for the ``.item`` file, its path, the item id of each
   row and the length of each sequence cell as read; ``modalities.py`` checks them
   for every model that reads item content. Without a fixed split RecBole also drops,
   silently, the interactions of items that have no ``.item`` row
   (``filter_inter_by_user_or_item``): how many, and of how many items, is kept too. A file RecBole cannot parse (an unknown
   column type, a header cell without ``:type``, a non-number in a float column, a
   row with the wrong number of fields) raises one :class:`~recbole_metammf.errors.DataError`
   naming the file instead of an exception from deep inside pandas.

6. **Cold-item evaluation data.** RecBole's evaluation collector gathers, per batch
   of users, only what its own metrics need. The plugin's ``ColdRecall`` / ``ColdNDCG``
   (``metrics.py``) need two more entries, added to the collector when those metrics are
   configured: ``data.cold_items`` (the items with no training interaction, taken from the
   training split where RecBole collects ``data.count_items``, at the start of ``fit``) and
   ``rec.cold_topk`` (per batch, from the same scores as ``rec.topk``; dropped after each
   evaluation as RecBole drops its own ``rec.*`` entries). No extra scoring pass. They are
   left out (with a warning) of a multi-process evaluation, whose per-rank averaging by
   user count would be wrong for them, and of an evaluation that never saw the training split.

7. **Which items the test ranking masks** (``test_mask``, ``evaluation.py``). RecBole's
   ``FullSortEvalDataLoader`` builds each user's masked items once, in ``__init__`` (the
   sampler's used items of the phase minus the user's positives: training and validation items
   for the test split). After RecBole's ``__init__`` and ``update_config``, the loader's own
   config decides whether the test loader keeps that table (``train+valid``, RecBole's) or
   masks only the training items (``train``, MMRec's and DiffMM's code). Validation loaders are
   untouched; nothing is stored outside the loader, so one run's choice never leaks into
   another run of the same process.

8. **Training batches without item feature columns** (``batch_item_features``). RecBole's
   training loader joins every item feature column into each batch, for the positive and
   for the sampled negative items (``Dataset.join``): on a dataset with two 128-d modalities
   that is two gathers of 2 x 128 floats per row and batch, about a fifth of a VBPR epoch on
   TikTok, for columns no general recommender reads (RecBole's read none; the plugin's read
   item content once, from their own table). For a general model and ``batch_item_features:
   False`` (``properties/overall.yaml``) the training loader builds the same batches (the same
   rows, the same negative ids, from the same random draws) with the item ids alone; user
   feature columns are still joined. ``True`` gives RecBole's batches, for a model of your own
   that reads item features from the batch. Evaluation loaders are untouched.
"""

from __future__ import annotations

import datetime
import os
from logging import getLogger

import numpy as np
import pandas as pd
import torch

from recbole.config import configurator
from recbole.config.configurator import Config
from recbole.data.dataloader import FullSortEvalDataLoader, TrainDataLoader
from recbole.data.interaction import Interaction
from recbole.data.dataset import Dataset
from recbole.evaluator.collector import Collector
from recbole.trainer import trainer as recbole_trainer
from recbole.utils import EvaluatorType, FeatureSource, FeatureType, InputType, ModelType, get_model

from recbole_metammf.errors import DataError
from recbole_metammf.paths import PROPERTIES_DIR

_APPLIED = False


# ----------------------------------------------------------------------------
# 1. configuration layers
# ----------------------------------------------------------------------------
def plugin_config_files(model: str, dataset: str, data_path: str) -> list[tuple[str, bool]]:
    """The plugin's YAML files for (model, dataset), lowest priority first.

    Returns ``(path, is_dataset_file)`` pairs for the files that exist.
    """
    recbole_dataset_yaml = os.path.join(
        os.path.dirname(os.path.realpath(configurator.__file__)),
        "..", "properties", "dataset", f"{dataset}.yaml",
    )
    candidates = [
        (os.path.join(PROPERTIES_DIR, "overall.yaml"), False),
        (os.path.join(PROPERTIES_DIR, "model", f"{model}.yaml"), False),
        (recbole_dataset_yaml, True),
        (os.path.join(PROPERTIES_DIR, "dataset", f"{dataset}.yaml"), True),
        (os.path.join(data_path, dataset, f"{dataset}.yaml"), True),
    ]
    return [(path, is_ds) for path, is_ds in candidates if os.path.isfile(path)]


def _load_internal_config_dict(self, model, model_class, dataset, _orig=Config._load_internal_config_dict):
    _orig(self, model, model_class, dataset)
    data_path = self.external_config_dict.get(
        "data_path", self.internal_config_dict.get("data_path", "dataset/")
    )
    for path, is_dataset_file in plugin_config_files(model, dataset, data_path):
        loaded = self._update_internal_config_dict(path) or {}
        if is_dataset_file:
            self.parameters["Dataset"] += [k for k in loaded if k not in self.parameters["Dataset"]]


# ----------------------------------------------------------------------------
# 2. checkpoints that load with weights_only=True
# ----------------------------------------------------------------------------
def rebuild_config(state: dict) -> Config:
    """Inverse of :func:`_reduce_config`: a ``Config`` from plain data."""
    config = Config.__new__(Config)
    config.__dict__.update(state)
    config.yaml_loader = config._build_yaml_loader()
    config.model_class = get_model(state["model"])
    config.compatibility_settings()  # numpy's removed aliases that RecBole's loaders use (Config.__init__ sets them)
    return config


def _reduce_config(self):
    state = {k: v for k, v in self.__dict__.items() if k not in ("model_class", "yaml_loader")}
    return rebuild_config, (state,)


def _save_checkpoint(self, epoch, verbose=True, **kwargs):
    """RecBole's checkpoint contents, written with torch's default pickle protocol."""
    if not self.config["single_spec"] and self.config["local_rank"] != 0:
        return
    path = kwargs.pop("saved_model_file", self.saved_model_file)
    torch.save(
        {
            "config": self.config,
            "epoch": epoch,
            "cur_step": self.cur_step,
            "best_valid_score": float(self.best_valid_score),
            "state_dict": self.model.state_dict(),
            "other_parameter": self.model.other_parameter(),
            "optimizer": self.optimizer.state_dict(),
        },
        path,
    )
    if verbose:
        self.logger.info(f"Saving current: {path}")


def _safe_checkpoint_globals() -> list:
    numpy_globals = [np.dtype, np.core.multiarray.scalar]
    numpy_globals += [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool")]
    return [rebuild_config, InputType, ModelType, EvaluatorType, *numpy_globals]


# ----------------------------------------------------------------------------
# 3. distributed training on CPU (gloo)
# ----------------------------------------------------------------------------
DEFAULT_DDP_TIMEOUT = 600  # seconds; properties/overall.yaml's ddp_timeout


def _init_device(self, _orig=Config._init_device):
    cfg = self.final_config_dict
    if "local_rank" not in cfg or torch.cuda.is_available():
        return _orig(self)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(
            backend="gloo",
            rank=cfg["local_rank"] + cfg["offset"],
            world_size=cfg["world_size"],
            init_method=f"tcp://{cfg['ip']}:{cfg['port']}",
            timeout=datetime.timedelta(seconds=float(cfg.get("ddp_timeout") or DEFAULT_DDP_TIMEOUT)),
        )
    cfg["gpu_id"] = str(cfg["gpu_id"])
    cfg["device"] = torch.device("cpu")
    cfg["single_spec"] = False
    if cfg["local_rank"] != 0:
        cfg["state"] = "error"
        cfg["show_progress"] = False
        cfg["verbose"] = False


def _ddp_buffers_to_ignore(module: torch.nn.Module) -> list[str]:
    """Fully qualified names of every non-persistent buffer (constant data built from the dataset)."""
    names = []
    for prefix, sub in module.named_modules():
        for name in getattr(sub, "_non_persistent_buffers_set", ()):
            names.append(f"{prefix}.{name}" if prefix else name)
    return names


def _distributed_data_parallel(module, device_ids=None, **kwargs):
    """RecBole's trainer's ``DistributedDataParallel``, valid for CPU modules too."""
    devices = {p.device.type for p in module.parameters()}
    if devices == {"cpu"}:
        device_ids = None  # torch rejects device_ids for a CPU module
    ignore = set(getattr(module, "_ddp_params_and_buffers_to_ignore", ())) | set(_ddp_buffers_to_ignore(module))
    module._ddp_params_and_buffers_to_ignore = sorted(ignore)
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=device_ids, **kwargs)


def _trainer_init(self, config, model, _orig=recbole_trainer.Trainer.__init__):
    _orig(self, config, model)
    # section 2 (d): one checkpoint per process, even for runs started in the same second
    stem, ext = os.path.splitext(self.saved_model_file)
    self.saved_model_file = f"{stem}-{os.getpid()}{ext}"
    if not config["single_spec"] and torch.distributed.is_initialized():
        # one checkpoint name for all ranks: rank 0's (the only rank that writes it)
        name = [self.saved_model_file]
        torch.distributed.broadcast_object_list(name, src=0)
        self.saved_model_file = name[0]


def _distributed_save_checkpoint(self, epoch, verbose=True, **kwargs):
    _save_checkpoint(self, epoch, verbose=verbose, **kwargs)
    if not self.config["single_spec"] and torch.distributed.is_initialized():
        torch.distributed.barrier()  # nobody reads the checkpoint before rank 0 has written it


# ----------------------------------------------------------------------------
# 4. race-free directory creation
# ----------------------------------------------------------------------------
_ENSURE_DIR_MODULES = (
    "recbole.utils.utils",
    "recbole.utils",
    "recbole.utils.logger",
    "recbole.data.utils",
    "recbole.data.dataset.dataset",
    "recbole.trainer.trainer",
)


def ensure_dir(dir_path) -> None:
    """Make sure ``dir_path`` exists (safe when several processes create it at once)."""
    os.makedirs(dir_path, exist_ok=True)


def _patch_ensure_dir() -> None:
    import importlib

    for name in _ENSURE_DIR_MODULES:
        module = importlib.import_module(name)
        if hasattr(module, "ensure_dir"):
            module.ensure_dir = ensure_dir


# ----------------------------------------------------------------------------
# 5. item feature rows as read
# ----------------------------------------------------------------------------
ITEM_ROWS_ATTR = "_metammf_item_rows"  # the Dataset attribute (kept by Dataset.copy and by pickling)


def _load_feat(self, filepath, source, _orig=Dataset._load_feat):
    try:
        df = _orig(self, filepath, source)
    except ValueError as err:  # pandas' ParserError is a ValueError too
        raise DataError(f"{filepath}: cannot be read as a RecBole atomic file ({err})") from err
    if df is not None and source == FeatureSource.ITEM and self.iid_field in df:
        seq_fields = [f for f in df.columns if self.field2type[f] in (FeatureType.FLOAT_SEQ, FeatureType.TOKEN_SEQ)]
        setattr(self, ITEM_ROWS_ATTR, {
            "path": str(filepath),
            # raw item tokens, in file order; a copy: pandas' column may be a view of the block that read_csv
            # filled, which holds every column's raw text (the float_seq strings too: 0.24 GB at TikTok shape)
            "ids": df[self.iid_field].to_numpy(copy=True),
            "lengths": {f: np.fromiter(map(len, df[f].values), dtype=np.int64, count=len(df)) for f in seq_fields},
        })
    return df


def _filter_inter_by_user_or_item(self, _orig=Dataset._filter_inter_by_user_or_item):
    record = getattr(self, ITEM_ROWS_ATTR, None)
    if record is not None and self.config["filter_inter_by_user_or_item"] is True and self.item_feat is not None:
        dropped = ~self.inter_feat[self.iid_field].isin(self.item_feat[self.iid_field].values)
        items = pd.unique(self.inter_feat[self.iid_field][dropped])
        record["dropped"] = {"interactions": int(dropped.sum()), "items": len(items), "examples": list(items[:3])}
    _orig(self)


# ----------------------------------------------------------------------------
# 6. cold-item evaluation data
# ----------------------------------------------------------------------------
def _data_collect(self, train_data, _orig=Collector.data_collect):
    _orig(self, train_data)
    if self.register.need("data.cold_items"):
        from recbole_metammf.metrics import cold_items_mask

        dataset = train_data.dataset
        self.data_struct.set("data.cold_items", cold_items_mask(dataset.item_counter, dataset.item_num))


def _eval_batch_collect(self, scores_tensor, interaction, positive_u, positive_i, _orig=Collector.eval_batch_collect):
    _orig(self, scores_tensor, interaction, positive_u, positive_i)
    if self.register.need("rec.cold_topk"):
        from recbole_metammf.metrics import cold_topk

        why = None
        if not self.config["single_spec"]:
            # every rank must report the same keys (RecBole all-gathers each one) and RecBole averages the
            # ranks weighted by their users, which is wrong for a metric over the users with a cold item
            why = "they are not averaged correctly over the processes of a multi-process run"
        elif "data.cold_items" not in self.data_struct:  # evaluate() without fit(): no training split seen
            why = ("they need the training split; call trainer.eval_collector.data_collect(train_data) "
                   "before trainer.evaluate (Trainer.fit does)")
        if why is not None:
            if not getattr(self, "_cold_warned", False):
                getLogger().warning(f"ColdRecall / ColdNDCG left out: {why}")
                self._cold_warned = True
            return
        cold = self.data_struct["data.cold_items"].to(scores_tensor.device)
        self.data_struct.update_tensor("rec.cold_topk", cold_topk(scores_tensor, positive_u, positive_i, cold, max(self.topk)))


def _get_data_struct(self, _orig=Collector.get_data_struct):
    struct = _orig(self)
    if "rec.cold_topk" in self.data_struct:  # per evaluation, as RecBole's own rec.* entries
        del self.data_struct["rec.cold_topk"]
    return struct


# ----------------------------------------------------------------------------
# 7. the test ranking's mask
# ----------------------------------------------------------------------------
def _full_sort_init(self, config, dataset, sampler, shuffle=False, _orig=FullSortEvalDataLoader.__init__):
    _orig(self, config, dataset, sampler, shuffle=shuffle)
    from recbole_metammf.evaluation import apply_test_mask

    apply_test_mask(self, config)


def _full_sort_update_config(self, config, _orig=FullSortEvalDataLoader.update_config):
    _orig(self, config)
    from recbole_metammf.evaluation import apply_test_mask

    apply_test_mask(self, config)


# ----------------------------------------------------------------------------
# 8. training batches without item feature columns
# ----------------------------------------------------------------------------
def skips_item_join(loader) -> bool:
    """Whether ``loader`` (a training loader) builds its batches from item ids alone (section 8)."""
    if not isinstance(loader, TrainDataLoader) or getattr(loader._dataset, "item_feat", None) is None:
        return False
    config = loader.config
    join = config["batch_item_features"] if "batch_item_features" in config else True
    return not join and config["MODEL_TYPE"] == ModelType.GENERAL


def _join_users_only(dataset, df):
    if dataset.user_feat is not None and dataset.uid_field in df:
        df.update(dataset.user_feat[df[dataset.uid_field]])
    return df


def _train_collate_fn(self, index, _orig=TrainDataLoader.collate_fn):
    if not skips_item_join(self):
        return _orig(self, index)
    data = _join_users_only(self._dataset, self._dataset.__getitem__(np.array(index), join=False))
    return self._neg_sampling(self.transform(self._dataset, data))


def _pair_wise_sampling(self, inter_feat, neg_item_ids, _orig=TrainDataLoader._neg_sample_by_pair_wise_sampling):
    if not skips_item_join(self):
        return _orig(self, inter_feat, neg_item_ids)
    inter_feat = inter_feat.repeat(self.times)
    neg_item_feat = Interaction({self.iid_field: neg_item_ids})
    neg_item_feat.add_prefix(self.neg_prefix)
    inter_feat.update(neg_item_feat)
    return inter_feat


def apply() -> None:
    """Install every workaround above (idempotent)."""
    global _APPLIED
    if _APPLIED:
        return
    Config._load_internal_config_dict = _load_internal_config_dict
    Config._init_device = _init_device
    Config.__reduce__ = _reduce_config
    recbole_trainer.Trainer._save_checkpoint = _distributed_save_checkpoint
    recbole_trainer.Trainer.__init__ = _trainer_init
    recbole_trainer.DistributedDataParallel = _distributed_data_parallel
    torch.serialization.add_safe_globals(_safe_checkpoint_globals())
    _patch_ensure_dir()
    Collector.data_collect = _data_collect
    Collector.eval_batch_collect = _eval_batch_collect
    Collector.get_data_struct = _get_data_struct
    Dataset._load_feat = _load_feat
    Dataset._filter_inter_by_user_or_item = _filter_inter_by_user_or_item
    FullSortEvalDataLoader.__init__ = _full_sort_init
    FullSortEvalDataLoader.update_config = _full_sort_update_config
    TrainDataLoader.collate_fn = _train_collate_fn
    TrainDataLoader._neg_sample_by_pair_wise_sampling = _pair_wise_sampling
    _APPLIED = True
