"""Box decoding and NMS in numpy: turns the per-level outputs of ``model.onnx`` into boxes.

Mirrors torchvision's FCOS post-processing (``BoxLinearCoder(normalize_by_size=True)``, score =
sqrt(sigmoid(class) * sigmoid(centre-ness)), per-level top-k, class-wise NMS), so ONNX Runtime
and torch give the same boxes. No torch import here.
"""

from __future__ import annotations

import numpy as np

STRIDES = (8, 16, 32)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def level_centres(height: int, width: int, stride: int) -> np.ndarray:
    """Centres (x, y) of the locations of one level, in the order the head flattens them (row-major)."""
    h, w = -(-height // stride), -(-width // stride)
    ys, xs = np.meshgrid(np.arange(h) * stride, np.arange(w) * stride, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, highest score first."""
    order = np.argsort(-scores, kind="stable")
    x0, y0, x1, y1 = boxes.T
    area = (x1 - x0) * (y1 - y0)
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.clip(np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]), 0, None)
        h = np.clip(np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]), 0, None)
        inter = w * h
        ov = inter / np.maximum(area[i] + area[rest] - inter, 1e-9)
        order = rest[ov <= iou]
    return np.asarray(keep, dtype=np.int64)


def decode(outputs: list[np.ndarray], height: int, width: int, *, score_thresh: float = 0.05,
           nms_iou: float = 0.5, topk: int = 1000, max_det: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``boxes`` (n, 4) in the padded input's pixels, ``scores`` (n,), ``labels`` (n,) from the
    ONNX outputs of one image (``cls_i, reg_i, ctr_i`` per level, batch of 1)."""
    all_boxes, all_scores, all_labels = [], [], []
    for lvl, stride in enumerate(STRIDES):
        cls, reg, ctr = (np.asarray(o)[0] for o in outputs[3 * lvl:3 * lvl + 3])
        centres = level_centres(height, width, stride)
        n_cls = cls.shape[1]
        scores = np.sqrt(_sigmoid(cls) * _sigmoid(ctr)).ravel()
        idx = np.flatnonzero(scores > score_thresh)
        if idx.size > topk:
            idx = idx[np.argpartition(-scores[idx], topk - 1)[:topk]]
        loc, lab = idx // n_cls, idx % n_cls
        d = reg[loc] * stride
        c = centres[loc]
        all_boxes.append(np.stack([c[:, 0] - d[:, 0], c[:, 1] - d[:, 1], c[:, 0] + d[:, 2], c[:, 1] + d[:, 3]], 1))
        all_scores.append(scores[idx])
        all_labels.append(lab)
    boxes = np.concatenate(all_boxes).astype(np.float32)
    scores = np.concatenate(all_scores).astype(np.float32)
    labels = np.concatenate(all_labels).astype(np.int64)
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height)
    return suppress(boxes, scores, labels, nms_iou=nms_iou, max_det=max_det)


def suppress(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, *, nms_iou: float = 0.5,
             max_det: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class-wise NMS, then the ``max_det`` highest scores, highest first."""
    keep_all = []
    for c in np.unique(labels):
        ix = np.flatnonzero(labels == c)
        keep_all.append(ix[nms(boxes[ix], scores[ix], nms_iou)])
    keep = np.concatenate(keep_all) if keep_all else np.zeros(0, np.int64)
    keep = keep[np.argsort(-scores[keep], kind="stable")][:max_det]
    return boxes[keep], scores[keep], labels[keep]
