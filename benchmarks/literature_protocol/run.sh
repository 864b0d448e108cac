#!/bin/sh
# The literature's protocol beside ours on DiffMM's TikTok subset (benchmarks/literature_protocol.md):
# LightGCN at its defaults, seed 2020, test_mask train+valid (RecBole's) and train (MMRec's / DiffMM's),
# each with the best-test-epoch diagnostic; then the same on mm-ml-100k. One trial at a time, one thread.
set -e
for mask in train+valid train; do
  OMP_NUM_THREADS=1 python run_benchmark.py --models LightGCN --datasets tiktok-diffmm --seeds 1 \
    --out "benchmarks/literature_protocol/mask-$mask" --data_path=dataset --epochs=300 \
    --test_mask=$mask --diagnose_best_test_epoch=True
done
# where validation and test users overlap: the built-in dataset's per-user random split
for mask in train+valid train; do
  OMP_NUM_THREADS=1 python run_benchmark.py --models LightGCN --datasets mm-ml-100k --seeds 1 \
    --out "benchmarks/literature_protocol/mm-ml-100k-mask-$mask" --data_path=dataset \
    --test_mask=$mask --diagnose_best_test_epoch=True
done
python benchmarks/literature_protocol.py
