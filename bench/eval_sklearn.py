"""scikit-learn (and a numpy binned histogram) on the data `cargo bench --bench eval` uses:
one 1920x1080 map of uniform scores, about 1% anomalous pixels.

usage: .venv/bin/python bench/eval_sklearn.py [REPEATS]
Prints Mpixel/s per metric (single-threaded by nature).
"""
import sys
import time

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

W, H, BINS = 1920, 1080, 5000
repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 3
rng = np.random.default_rng(0)
scores = rng.random(W * H, dtype=np.float32)
labels = np.zeros(W * H, dtype=np.int8)
labels[rng.choice(W * H, W * H // 100, replace=False)] = 1


def binned_counts():
    bins = np.minimum((scores.astype(np.float64) * (BINS - 1)).astype(np.int64), BINS - 1)
    return np.bincount(bins[labels == 1], minlength=BINS), np.bincount(bins[labels == 0], minlength=BINS)


for name, fn in [
    ("roc_auc_score", lambda: roc_auc_score(labels, scores)),
    ("average_precision_score", lambda: average_precision_score(labels, scores)),
    ("roc_curve(drop_intermediate=False)", lambda: roc_curve(labels, scores, drop_intermediate=False)),
    ("numpy binned histogram (T=5000)", binned_counts),
]:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    print(f"{name:40s} {best * 1e3:8.1f} ms  {W * H / best / 1e6:8.1f} Mpixel/s")
