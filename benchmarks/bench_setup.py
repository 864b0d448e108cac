"""What the single-process timing scripts (bench_eval_batch.py, bench_batch_join.py) do before timing."""

from __future__ import annotations

import os
import sys
import tempfile


def one_thread_in_scratch(script: str, data_path: str, dataset: str, hint: str) -> str:
    """One torch thread, the dataset's folder checked (else exit naming it and ``hint``), the working
    directory a fresh temporary one (RecBole writes log/ there); the absolute ``data_path``."""
    import torch

    torch.set_num_threads(1)
    data_path = os.path.abspath(data_path)
    if not os.path.isdir(os.path.join(data_path, dataset)):
        sys.exit(f"{script}: no dataset {dataset!r} under {data_path}; {hint}")
    os.chdir(tempfile.mkdtemp())
    return data_path
