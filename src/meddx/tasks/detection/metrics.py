"""Detection metrics: COCO mAP@0.5 and mAP@0.5:0.95 with per-class AP (pycocotools), and a
bootstrap CI over images.

Inputs are plain numpy: ground truth per image ``(boxes (n, 4) x0 y0 x1 y1, labels (n,))`` and
detections per image ``(boxes, scores, labels)``. Areas are the box areas (no masks), so the COCO
"small/medium/large" split is not reported.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np

GroundTruth = tuple[np.ndarray, np.ndarray]
Detections = tuple[np.ndarray, np.ndarray, np.ndarray]


def _coco_eval(gts: list[GroundTruth], dets: list[Detections], n_classes: int) -> Any:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, anns, results = [], [], []
    for i, (b, lab) in enumerate(gts):
        images.append({"id": i, "width": 1, "height": 1})
        for k, (box, c) in enumerate(zip(np.asarray(b, float).reshape(-1, 4), np.asarray(lab).ravel())):
            w, h = box[2] - box[0], box[3] - box[1]
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(c), "bbox": [box[0], box[1], w, h],
                         "area": float(w * h), "iscrowd": 0})
    for i, (b, s, lab) in enumerate(dets):
        for box, score, c in zip(np.asarray(b, float).reshape(-1, 4), np.asarray(s).ravel(), np.asarray(lab).ravel()):
            results.append({"image_id": i, "category_id": int(c), "score": float(score),
                            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": c} for c in range(n_classes)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes(results) if results else COCO()
        if not results:
            dt.dataset = {"images": images, "annotations": [], "categories": gt.dataset["categories"]}
            dt.createIndex()
        ev = COCOeval(gt, dt, iouType="bbox")
        ev.params.maxDets = [1, 10, 300]  # a blood smear holds 10-30 cells
        ev.params.areaRng, ev.params.areaRngLbl = [[0, 1e10]], ["all"]  # boxes only: no small/medium/large
        ev.evaluate()
        ev.accumulate()
    return ev


def _ap(precision: np.ndarray) -> float:
    p = precision[precision > -1]
    return float(np.mean(p)) if p.size else float("nan")


def detection_map(gts: list[GroundTruth], dets: list[Detections], class_names: list[str]) -> dict[str, Any]:
    """``{"map50", "map50_95", "per_class": {name: {"ap50", "ap50_95"}}}``; a class with no ground truth in
    ``gts`` gets NaN and is left out of the means (COCO's rule)."""
    if len(gts) != len(dets):
        raise ValueError(f"{len(gts)} ground-truth images but {len(dets)} detection lists")
    ev = _coco_eval(gts, dets, len(class_names))
    prec = ev.eval["precision"]  # (iou thresholds, recall, class, area, maxdets)
    a, m = 0, prec.shape[4] - 1  # all areas, the largest maxDets
    per_class = {}
    for c, name in enumerate(class_names):
        per_class[name] = {"ap50": _ap(prec[0, :, c, a, m]), "ap50_95": _ap(prec[:, :, c, a, m])}
    ap50 = [v["ap50"] for v in per_class.values() if np.isfinite(v["ap50"])]
    ap = [v["ap50_95"] for v in per_class.values() if np.isfinite(v["ap50_95"])]
    return {"map50": float(np.mean(ap50)) if ap50 else float("nan"),
            "map50_95": float(np.mean(ap)) if ap else float("nan"), "per_class": per_class}


def _per_image(ev: Any, n_images: int, n_classes: int) -> list[list[tuple[np.ndarray, np.ndarray, int]]]:
    """From a COCOeval after ``evaluate()``: per class, per image, (scores (D,), true positive flags (T, D)
    without ignored detections, number of ground-truth boxes). The matching is COCO's own."""
    n_areas = len(ev.params.areaRng)
    out = []
    for k in range(n_classes):
        rows = []
        for i in range(n_images):
            e = ev.evalImgs[k * n_areas * n_images + i]  # area index 0: all
            if e is None:
                rows.append((np.zeros(0), np.zeros((len(ev.params.iouThrs), 0), bool), 0))
                continue
            order = np.argsort(-np.asarray(e["dtScores"]), kind="mergesort")[: ev.params.maxDets[-1]]
            scores = np.asarray(e["dtScores"])[order]
            matched = (np.asarray(e["dtMatches"])[:, order] > 0) & ~np.asarray(e["dtIgnore"])[:, order]
            rows.append((scores, matched, int(np.sum(~np.asarray(e["gtIgnore"], bool)))))
        out.append(rows)
    return out


def _ap_of(rows: list[tuple[np.ndarray, np.ndarray, int]], idx: np.ndarray, rec_thrs: np.ndarray) -> np.ndarray:
    """AP per IoU threshold over the images ``idx`` (repeats allowed), as COCOeval.accumulate computes it."""
    n_gt = sum(rows[i][2] for i in idx)
    n_t = rows[0][1].shape[0]
    if n_gt == 0:
        return np.full(n_t, np.nan)
    scores = np.concatenate([rows[i][0] for i in idx])
    if scores.size == 0:
        return np.zeros(n_t)
    tps = np.concatenate([rows[i][1] for i in idx], axis=1)
    order = np.argsort(-scores, kind="mergesort")
    tps = tps[:, order]
    tp = np.cumsum(tps, axis=1, dtype=float)
    fp = np.cumsum(~tps, axis=1, dtype=float)
    out = np.zeros(n_t)
    for t in range(n_t):
        rc = tp[t] / n_gt
        pr = tp[t] / (fp[t] + tp[t] + np.spacing(1))
        pr = np.maximum.accumulate(pr[::-1])[::-1]
        ix = np.searchsorted(rc, rec_thrs, side="left")
        q = np.zeros(rec_thrs.size)
        ok = ix < pr.size
        q[ok] = pr[ix[ok]]
        out[t] = q.mean()
    return out


def bootstrap_map(gts: list[GroundTruth], dets: list[Detections], class_names: list[str], *, n_boot: int = 1000,
                  seed: int = 0, alpha: float = 0.05) -> dict[str, Any]:
    """Point values and percentile CIs over images resampled with replacement, for mAP@0.5 and
    mAP@0.5:0.95 and each class's AP@0.5: ``{"map50": {"value", "low", "high"}, ...}``.

    COCO's matching runs once (pycocotools); each resample re-accumulates precision and recall
    from the matched detections of the drawn images, exactly as ``COCOeval.accumulate`` would."""
    point = detection_map(gts, dets, class_names)
    ev = _coco_eval(gts, dets, len(class_names))
    n = len(gts)
    rows = _per_image(ev, n, len(class_names))
    rec_thrs = np.asarray(ev.params.recThrs)
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {"map50": [], "map50_95": [], **{f"ap50_{c}": [] for c in class_names}}
    for _ in range(max(0, n_boot)):
        idx = rng.integers(0, n, n)
        ap = np.array([_ap_of(rows[k], idx, rec_thrs) for k in range(len(class_names))])  # (classes, T)
        present = np.isfinite(ap[:, 0])
        draws["map50"].append(float(ap[present, 0].mean()) if present.any() else np.nan)
        draws["map50_95"].append(float(ap[present].mean()) if present.any() else np.nan)
        for k, c in enumerate(class_names):
            draws[f"ap50_{c}"].append(float(ap[k, 0]))
    values = {"map50": point["map50"], "map50_95": point["map50_95"],
              **{f"ap50_{c}": point["per_class"][c]["ap50"] for c in class_names}}
    out: dict[str, Any] = {}
    for k, v in values.items():
        d = np.asarray([x for x in draws[k] if np.isfinite(x)])
        lo, hi = (np.quantile(d, [alpha / 2, 1 - alpha / 2]) if d.size else (float("nan"), float("nan")))
        out[k] = {"value": float(v), "low": float(lo), "high": float(hi)}
    out["per_class"] = point["per_class"]
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def match_f1(gts: list[GroundTruth], dets: list[Detections], threshold: float, iou: float = 0.5) -> float:
    """Micro F1 of the detections scoring at least ``threshold`` (greedy matching per class at ``iou``)."""
    tp = fp = fn = 0
    for (gb, gl), (db, ds, dl) in zip(gts, dets):
        keep = np.asarray(ds) >= threshold
        db, dl, ds = np.asarray(db).reshape(-1, 4)[keep], np.asarray(dl)[keep], np.asarray(ds)[keep]
        gb, gl = np.asarray(gb).reshape(-1, 4), np.asarray(gl)
        for c in np.union1d(np.unique(gl), np.unique(dl)):
            g, d = gb[gl == c], db[dl == c][np.argsort(-ds[dl == c])]
            used = np.zeros(len(g), bool)
            ious = _iou(d, g) if len(d) and len(g) else np.zeros((len(d), len(g)))
            for k in range(len(d)):
                cand = np.where(~used, ious[k], -1.0)
                j = int(np.argmax(cand)) if len(g) else -1
                if j >= 0 and cand[j] >= iou:
                    used[j] = True
                    tp += 1
                else:
                    fp += 1
            fn += int((~used).sum())
    return 2 * tp / max(1, 2 * tp + fp + fn)


def best_threshold(gts: list[GroundTruth], dets: list[Detections], grid: tuple[float, ...] | None = None
                   ) -> tuple[float, float]:
    """The score threshold (from ``grid``) with the highest :func:`match_f1`, and that F1."""
    grid = grid or tuple(np.round(np.arange(0.1, 0.8, 0.05), 2))
    scores = [(match_f1(gts, dets, t), t) for t in grid]
    f1, t = max(scores)
    return float(t), float(f1)
