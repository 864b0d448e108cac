"""Where a training process's memory goes (issue 12's peak-memory target), one case of bench_scale.py.

Builds the case as ``bench_scale.py`` does (RecBole's pipeline, the same data), then prints the
process's peak and current RSS after loading and after each of a few training steps, and the
allocations of one profiled step (``torch.profiler``, ``profile_memory``). Run it twice to see how
much of the peak is glibc keeping freed blocks (heap fragmentation) rather than live tensors:

    python benchmarks/probe_memory.py tiktok/MetaMMF_GCN
    MALLOC_MMAP_THRESHOLD_=131072 python benchmarks/probe_memory.py tiktok/MetaMMF_GCN

(the second fixes glibc's mmap threshold at its initial 128 KB, so every freed large block goes
back to the system at once; ``benchmarks/scale_runs/notes.md`` has the figures and what that costs
in speed). The last line gives the peak and the median step time (steps 3 onwards), so the ways
of trading speed for memory can be compared in one line each:

    python benchmarks/probe_memory.py tiktok/MetaMMF_GCN --steps 40 --no-profile
    THP_MEM_ALLOC_ENABLE=1 python benchmarks/probe_memory.py tiktok/MetaMMF_GCN --steps 40 --no-profile
    python benchmarks/probe_memory.py tiktok/MetaMMF_GCN --steps 40 --no-profile --malloc-trim each-step
    python benchmarks/probe_memory.py tiktok/MetaMMF_GCN --steps 40 --no-profile --checkpoint-fusion

Like ``run_recbole.py``, the case runs with the plugin's glibc malloc settings
(``recbole_metammf/allocator.py``); ``METAMMF_MALLOC=default python benchmarks/probe_memory.py ...``
keeps glibc's own, as every probe before round 4 did.

(``THP_MEM_ALLOC_ENABLE``: PyTorch's CPU allocator asks for transparent huge pages for large
blocks; ``--malloc-trim``: glibc's ``malloc_trim(0)`` once after building or after every step;
``--checkpoint-fusion``: MetaMMF_GCN's fusion of all items recomputed in the backward pass
instead of keeping its activations.)
"""

from __future__ import annotations

import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))


def saved_for_backward(model, batch) -> None:
    """What one training step's forward pass keeps for the backward pass (the activations live at the
    step's peak), by storage, largest first."""
    import collections

    import torch

    seen, by_shape = set(), collections.Counter()

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            by_shape[tuple(t.shape)] += storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.calculate_loss(batch)
    print(f"saved for backward: {sum(by_shape.values()) / 1e6:.0f} MB in {len(seen)} storages; largest "
          "(shape of the first tensor seen on each storage: MB):")
    for shape, nbytes in by_shape.most_common(8):
        print(f"  {shape}: {nbytes / 1e6:.0f}")
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    print(f"parameters {params / 1e6:.0f} MB (Adam keeps two more copies, the gradients one)")


def dataset_tensor_gb(dataset) -> float:
    """GiB held by a RecBole dataset's interaction and item feature tensors."""
    total = 0
    for feat in (dataset.inter_feat, dataset.item_feat, dataset.user_feat):
        for value in getattr(feat, "interaction", {}).values():
            total += value.numel() * value.element_size()
    return total / 2**30


def malloc_trim() -> None:
    """glibc's ``malloc_trim(0)``: freed heap memory back to the system (no-op elsewhere)."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def checkpoint_fusion() -> None:
    """MetaMMF_GCN's item representation with the fusion under ``torch.utils.checkpoint`` while training."""
    import torch
    from torch.utils.checkpoint import checkpoint

    from recbole_metammf.model.metammf_gcn import MetaMMF_GCN

    plain = MetaMMF_GCN.item_representation

    def item_representation(self):
        if not self.training:
            return plain(self)
        content = checkpoint(lambda: self.fusion(self.modalities.per_modality()), use_reentrant=False)
        return torch.cat([content, self.cold_id_table(self.item_id_embedding.weight)], dim=-1)

    MetaMMF_GCN.item_representation = item_representation


def main(argv=None) -> None:
    import bench_scale

    p = bench_scale.case_arguments(__doc__, steps=4)
    p.add_argument("--no-profile", action="store_true", help="skip the saved-tensor count and the profiled step")
    p.add_argument("--malloc-trim", choices=["never", "once", "each-step"], default="never")
    p.add_argument("--checkpoint-fusion", action="store_true", help="MetaMMF_GCN: recompute the fusion in backward")
    args = p.parse_args(argv)
    os.makedirs(args.work, exist_ok=True)
    os.chdir(args.work)  # RecBole writes log/ and saved/ under the working directory

    import recbole.data  # noqa: F401  (what build() imports, so that the next line is the imports' cost)
    import recbole.utils  # noqa: F401

    import recbole_metammf  # noqa: F401

    peak_gb, current_gb = bench_scale.peak_gb, bench_scale.rss_gb  # the units of bench_scale's tables (GiB)
    print(f"after imports: current {current_gb():.2f} GB", flush=True)
    if args.checkpoint_fusion:
        checkpoint_fusion()
    _config, model, trainer, train_data, _info = bench_scale.build(args.case, args.data, args.work, args.threads)
    print(f"after loading: current {_info['rss_after_data_gb']:.2f} GB; the dataset's tensors "
          f"{dataset_tensor_gb(train_data._dataset):.2f} GB", flush=True)
    if args.malloc_trim == "once":
        malloc_trim()
    print(f"after loading and building: peak {peak_gb():.2f} GB, current {current_gb():.2f} GB", flush=True)
    train_step, batches = bench_scale.stepper(model, trainer, train_data)

    def step():
        train_step()
        if args.malloc_trim == "each-step":
            malloc_trim()

    times = []
    for i in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
        print(f"after step {i + 1}: peak {peak_gb():.2f} GB, current {current_gb():.2f} GB", flush=True)
    median = statistics.median(times[2:]) if len(times) > 2 else float("nan")
    print(f"summary: {args.case}, {args.steps} steps, malloc_trim {args.malloc_trim}, checkpoint_fusion "
          f"{args.checkpoint_fusion}, allocator {_info['allocator']}, "
          f"THP_MEM_ALLOC_ENABLE={os.environ.get('THP_MEM_ALLOC_ENABLE', '')}, "
          f"MALLOC_MMAP_THRESHOLD_={os.environ.get('MALLOC_MMAP_THRESHOLD_', '')}: peak {peak_gb():.2f} GB, "
          f"median step {median:.3f} s (load average {os.getloadavg()[0]:.1f})", flush=True)
    if args.no_profile:
        return
    saved_for_backward(model, next(batches))
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    print(prof.key_averages().table(sort_by="self_cpu_memory_usage", row_limit=12))


if __name__ == "__main__":
    main()
