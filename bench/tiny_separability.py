"""How separable a synthetic split's val anomalies are from the station by appearance alone.

Cuts every frame into the detector's 14x14 patches (centred zero padding, as FlowCLAS pads) and
scores val patches with detectors that see only the patch pixels:
  - Gaussian (Mahalanobis, 32 PCA components) and 1-NN distance to the train split's clean patches;
  - a gradient-boosted classifier trained on train patches labelled hard negative (id 10) vs
    clean: what outlier exposure can learn from;
  - the same classifier trained on the train split's own anomalies (id 9): a supervised ceiling
    for appearance features;
  - the patch oracle: the true fraction of anomaly pixels per patch (the best any patch-level map
    can do).
Patch scores are spread back to pixels (nearest) and scored against the val masks with
scikit-learn's pixel AP and AUROC (anomaly id 9, id 255 ignored, everything else normal).

If the appearance detectors sit at prevalence / AUROC 0.5, no training recipe on low-level
features can beat an untrained flow on that split; only features that know what belongs on a
station (pretrained DINOv2) can.

usage: python bench/tiny_separability.py SYNTH_ROOT   (needs numpy, scikit-learn, pillow)
e.g.   stars synth --preset tiny --out /tmp/tiny --seed 1 && python bench/tiny_separability.py /tmp/tiny
"""
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.neighbors import NearestNeighbors

P = 14
ANOMALY, HARD_NEGATIVE, IGNORE = 9, 10, 255


def load(split: Path):
    frames, masks = [], []
    for mask_path in sorted(split.glob("*/masks/*.png")):
        frame_path = mask_path.parent.parent / "frames" / mask_path.name
        frames.append(np.asarray(Image.open(frame_path).convert("RGB"), np.float32) / 255.0)
        masks.append(np.asarray(Image.open(mask_path)))
    return np.stack(frames), np.stack(masks)


def padding(h, w):
    ph, pw = -(-h // P) * P, -(-w // P) * P
    return (ph - h) // 2, (pw - w) // 2, ph, pw


def patches(frames):
    n, h, w, _ = frames.shape
    top, left, ph, pw = padding(h, w)
    padded = np.zeros((n, ph, pw, 3), np.float32)
    padded[:, top : top + h, left : left + w] = frames
    grid = padded.reshape(n, ph // P, P, pw // P, P, 3).transpose(0, 1, 3, 2, 4, 5)
    return grid.reshape(n, ph // P, pw // P, P * P * 3)


def fraction(masks, label):
    n, h, w = masks.shape
    top, left, ph, pw = padding(h, w)
    padded = np.zeros((n, ph, pw), np.float32)
    padded[:, top : top + h, left : left + w] = masks == label
    return padded.reshape(n, ph // P, P, pw // P, P).mean((2, 4))


def pixel_scores(patch_scores, shape):
    n, h, w = shape
    top, left, _, _ = padding(h, w)
    up = np.repeat(np.repeat(patch_scores, P, 1), P, 2)
    return up[:, top : top + h, left : left + w]


def main(root: Path):
    train_frames, train_masks = load(root / "train")
    val_frames, val_masks = load(root / "val")
    x_train, x_val = patches(train_frames), patches(val_frames)
    anomalous_train = fraction(train_masks, ANOMALY)
    hard_negative_train = fraction(train_masks, HARD_NEGATIVE)
    clean = (anomalous_train == 0) & (hard_negative_train == 0)

    valid = val_masks != IGNORE
    truth = (val_masks == ANOMALY)[valid]
    print(f"val: {len(val_frames)} frames, pixel prevalence {truth.mean():.4f}")

    def report(name, patch_scores):
        s = pixel_scores(patch_scores, val_masks.shape)[valid]
        ap, auroc = average_precision_score(truth, s), roc_auc_score(truth, s)
        print(f"  {name:<44} AP {ap:.4f}  AUROC {auroc:.3f}")

    grid = x_val.shape[:3]
    flat_val = x_val.reshape(-1, x_val.shape[-1])
    report("patch oracle (anomaly fraction)", fraction(val_masks, ANOMALY))

    normal = x_train[clean]
    mean = normal.mean(0)
    _, _, vt = np.linalg.svd(normal - mean, full_matrices=False)
    project = lambda x: (x - mean) @ vt[:32].T  # noqa: E731
    z_train, z_val = project(normal), project(flat_val)
    precision = np.linalg.inv(np.cov(z_train.T) + 1e-3 * np.eye(z_train.shape[1]))
    mahalanobis = np.einsum("ij,jk,ik->i", z_val, precision, z_val)
    report("Mahalanobis to clean train patches", mahalanobis.reshape(grid))
    distance, _ = NearestNeighbors(n_neighbors=1).fit(z_train).kneighbors(z_val)
    report("1-NN distance to clean train patches", distance[:, 0].reshape(grid))

    for name, positive in [
        ("classifier: train hard negatives vs clean", hard_negative_train > 0.3),
        ("classifier: train anomalies vs clean", anomalous_train > 0.3),
    ]:
        x = np.concatenate([x_train[positive], normal])
        y = np.r_[np.ones(positive.sum()), np.zeros(len(normal))]
        model = HistGradientBoostingClassifier(random_state=0).fit(x, y)
        report(name, model.predict_proba(flat_val)[:, 1].reshape(grid))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
