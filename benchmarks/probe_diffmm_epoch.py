"""DiffMM's epoch in its parts at TikTok shape: the process's RSS / peak and CPU time after the diffusion
step, the graph rebuild and the recommender's batches (benchmarks/new_baselines_memory.md).

    OMP_NUM_THREADS=1 python benchmarks/probe_diffmm_epoch.py [DATA_PATH]
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import recbole_metammf  # noqa: E402,F401  (registers the plugin)
import torch  # noqa: E402
from recbole.config import Config  # noqa: E402
from recbole.data import create_dataset, data_preparation  # noqa: E402
from recbole.utils import get_model, init_seed  # noqa: E402

from recbole_metammf.allocator import tune_allocator  # noqa: E402


def rss() -> str:
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return f"rss {int(fields['VmRSS'].split()[0]) / 1024:.0f} MB, peak {int(fields['VmHWM'].split()[0]) / 1024:.0f} MB"


def main(data_path: str = "dataset") -> None:
    tune_allocator()  # as run_recbole.py
    sys.argv = sys.argv[:1]  # RecBole's Config reads the command line too
    config = Config(model="DiffMM", dataset="tiktok-diffmm",
                    config_dict={"data_path": data_path, "state": "ERROR", "show_progress": False})
    init_seed(2020, True)
    train, _, _ = data_preparation(config, create_dataset(config))
    print("data", rss(), flush=True)
    net = get_model("DiffMM")(config, train._dataset)
    print("model", rss(), flush=True)
    optimizer = torch.optim.Adam(net.parameters(), lr=config["learning_rate"])  # as RecBole's trainer
    t = time.process_time()
    net.diffusion_epoch()
    print(f"diffusion step: {rss()}, {time.process_time() - t:.1f} s CPU", flush=True)
    t = time.process_time()
    net.rebuild_graphs()
    print(f"graph rebuild: {rss()}, {time.process_time() - t:.1f} s CPU", flush=True)
    t = time.process_time()
    for batch in train:
        # the epoch's two first parts are done: no batch may start them again. The model runs them when its
        # step count is a multiple of the epoch's batch count, which the last batch's count (59 of 59) is
        net.train_steps = 1
        optimizer.zero_grad()
        net.calculate_loss(batch).backward()
        optimizer.step()
    print(f"recommender batches: {rss()}, {time.process_time() - t:.1f} s CPU", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:])
