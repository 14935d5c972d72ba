"""The (image, detection) handler: ``meddx train/evaluate/predict`` for object detectors.

:mod:`meddx.modalities` routes here for ``bccd-blood-cell-detection`` (VOC, its own
train/val/test split), ``covid-cxr-ieee8023-lungbbox`` (COCO lung boxes, split by patient) and
any VOC or COCO folder (see :func:`meddx.tasks.detection.data.load_detection_data`).

A run folder is a model package:

* ``package.json``: ``"modality": "image"``, ``"task": "detection"``, name, version, class names,
  preprocessing (input long side, normalisation), the detector settings, the score threshold
  (chosen on the validation split), test metrics with bootstrap CIs over images, the file names
  of each split, training time and history, ONNX Runtime time per image;
* ``model.safetensors``: the FCOS weights; ``model.onnx``: backbone, FPN and head (boxes are
  decoded and suppressed in numpy), so ``predict`` runs without torch;
* ``metrics.json``: the test evaluation.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from meddx.exceptions import ConfigError, MeddxError, ModelError
from meddx.tasks.detection.data import BCCD, COVID_LUNGS, DetectionSet, Item, load_detection_data, split_items
from meddx.tasks.detection.runtime import ONNX_FILE, WEIGHTS_FILE, Detector, read_rgb

MODELS = ("slim", "resnet18")
"""``slim``: from-scratch residual CNN (default); ``resnet18``: ResNet-18 trunk, optionally from a
user-supplied ImageNet state dict (``imagenet=<file>``)."""
FIT_OPTIONS = ("batch_size", "lr", "weight_decay", "long_side", "scale_jitter", "hflip", "rotate", "colour",
               "warmup_epochs", "eval_every", "time_budget_s", "threads")
OPTIONS = (*FIT_OPTIONS, "imagenet", "max_images", "n_boot", "fpn_channels", "head_convs", "name", "export_onnx",
           "export")
MIN_SIDE = 32
"""Images with a side below this many pixels are rejected."""
COLOURS = [(230, 25, 75), (60, 120, 240), (255, 200, 0), (60, 180, 75), (145, 30, 180), (70, 240, 240)]
INTENDED_USE = ("Research and decision support by qualified staff (counting and locating objects); "
                "not for primary diagnosis.")


# --------------------------------------------------------------------------- helpers
def _check_options(options: dict[str, Any]) -> None:
    for key in options:
        if key not in OPTIONS:
            raise ConfigError(f"unknown detection option {key!r}", field=key,
                              hint=f"Detection training takes {sorted(OPTIONS)}")


def _defaults(data: str, ds: DetectionSet) -> dict[str, Any]:
    """Per-data-set defaults: cells can be turned any way; X-rays keep up/down and left/right."""
    if data == COVID_LUNGS:
        return {"rotate": False, "hflip": False, "long_side": 256, "epochs": 40}
    return {"rotate": True, "hflip": True, "long_side": 416, "epochs": 60}


def _gt(items: list[Item]) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(it.boxes, it.labels) for it in items]


def _detect_items(det: Detector, items: list[Item]) -> tuple[list[tuple[np.ndarray, np.ndarray, np.ndarray]], float]:
    """Detections (score >= 0.05, for mAP) of each item and the mean seconds per image."""
    out, t = [], 0.0
    for it in items:
        rgb = read_rgb(it.path)
        t0 = time.perf_counter()
        out.append(det.detect(rgb, score_thresh=0.05))
        t += time.perf_counter() - t0
    return out, t / max(1, len(items))


def _metric_values(boot: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    def fin(v: Any) -> float | None:
        return float(v) if v is not None and np.isfinite(v) else None

    return {k: {"value": fin(v["value"]), "low": fin(v["low"]), "high": fin(v["high"])}
            for k, v in boot.items() if k != "per_class"}


def _result(package: dict[str, Any], items: list[Item], dets: list[Any], *, data: str, split: str, n_boot: int,
            seed: int, seconds_per_image: float | None) -> dict[str, Any]:
    from meddx.tasks.detection.metrics import bootstrap_map, match_f1

    names = list(package["class_names"])
    boot = bootstrap_map(_gt(items), dets, names, n_boot=n_boot, seed=seed)
    counts = {c: int(sum(int(np.sum(it.labels == i)) for it in items)) for i, c in enumerate(names)}
    thr = float(package.get("score_threshold", 0.3))
    return {
        "model": package.get("name"), "version": package.get("version"), "task": "detection", "data": data,
        "split": split, "n": len(items), "n_boot": int(n_boot), "resampling": "images", "class_names": names,
        "class_counts": counts, "metrics": _metric_values(boot),
        "per_class": {c: {k: (float(v) if np.isfinite(v) else None) for k, v in d.items()}
                      for c, d in boot["per_class"].items()},
        "f1_at_threshold": {"threshold": thr, "iou": 0.5, "value": match_f1(_gt(items), dets, thr)},
        "seconds_per_image": None if seconds_per_image is None else round(seconds_per_image, 4),
        "images": [it.name for it in items],
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# --------------------------------------------------------------------------- train
def train(data: str, *, model: str | None = None, seed: int = 0, epochs: int | None = None, out: Path | None = None,
          progress: bool = True, **options: Any) -> Path:
    """Train an FCOS detector on ``data`` and write its run folder (a model package); returns the folder.

    ``model``: ``slim`` (default) or ``resnet18``. Options: ``batch_size``, ``lr``, ``weight_decay``,
    ``long_side`` (input size), ``scale_jitter``, ``hflip``, ``rotate``, ``colour``, ``warmup_epochs``,
    ``eval_every``, ``time_budget_s`` (stop and keep the best model), ``threads``, ``imagenet`` (a
    ResNet-18 state dict for ``resnet18``), ``max_images`` (cap per split, for smoke tests), ``n_boot``,
    ``fpn_channels``, ``head_convs``, ``name``, ``export`` (``onnx`` or ``none``; also ``export_onnx``).
    Others are a ConfigError.
    """
    _check_options(options)
    from meddx.tasks.detection.model import DetectorConfig
    from meddx.tasks.detection.train import FitConfig, fit, torch_predict

    arch = model or "slim"
    if options.get("export") not in (None, "onnx", "none"):
        raise ConfigError(f"unknown export {options['export']!r}", field="export", hint="Use onnx or none")
    if arch not in MODELS:
        raise ConfigError(f"unknown detection model {arch!r}", field="model", hint=f"Choose one of {list(MODELS)}")
    if options.get("imagenet") and arch != "resnet18":
        raise ConfigError("ImageNet weights need the resnet18 model", field="imagenet", hint="Add --model resnet18")
    say = (lambda m: print(m, flush=True)) if progress else (lambda _m: None)
    t_start = time.perf_counter()
    ds = load_detection_data(data, errors="skip")
    for name, why in ds.rejected:
        say(f"skipped {name}: {why}")
    parts = split_items(ds, seed)
    cap = options.get("max_images")
    if cap:
        parts = {k: v[:int(cap)] for k, v in parts.items()}
    train_items, val_items, test_items = (ds.subset(parts[k]) for k in ("train", "val", "test"))
    say(f"{len(ds.items)} images, classes {ds.classes}: train {len(train_items)}, val {len(val_items)}, "
        f"test {len(test_items)}")
    defaults = _defaults(data, ds)
    fit_kw = {k: options[k] for k in FIT_OPTIONS if k in options}
    fit_kw.setdefault("rotate", defaults["rotate"])
    fit_kw.setdefault("hflip", defaults["hflip"])
    fit_kw.setdefault("long_side", defaults["long_side"])
    if "scale_jitter" in fit_kw:
        fit_kw["scale_jitter"] = tuple(float(v) for v in fit_kw["scale_jitter"])
    cfg = FitConfig(epochs=int(epochs) if epochs else defaults["epochs"], **fit_kw)
    det_cfg = DetectorConfig(arch=arch, num_classes=len(ds.classes),
                             fpn_channels=int(options.get("fpn_channels", 96)),
                             head_convs=int(options.get("head_convs", 2)))

    def val_map(m: Any, items: list[Item]) -> float:
        from meddx.tasks.detection.metrics import detection_map

        return detection_map(_gt(items), torch_predict(m, items, cfg.long_side), ds.classes)["map50"]

    net, history = fit(train_items, cfg, det_cfg, val=val_items, seed=seed, imagenet=options.get("imagenet"),
                       progress=say if progress else None, evaluate_fn=val_map)
    return write_run(data, ds, parts, cfg, det_cfg, net, history, model=arch, seed=seed, out=out, options=options,
                     t_start=t_start, say=say)


def write_run(data: str, ds: DetectionSet, parts: dict[str, list[str]], cfg: Any, det_cfg: Any, net: Any,
              history: dict[str, Any], *, model: str, seed: int, out: Path | None, options: dict[str, Any],
              t_start: float, say: Any = print) -> Path:
    """The second half of :func:`train`: save the weights and ``model.onnx``, pick the score threshold on
    the validation split, score the test split and write ``package.json``, ``metrics.json`` and the card."""
    import torch
    from safetensors.torch import save_file

    from meddx import __version__
    from meddx.config import home_dir
    from meddx.packaging.registry import write_package
    from meddx.tasks.detection.metrics import best_threshold
    from meddx.tasks.detection.model import export_onnx

    arch = model
    train_items, val_items, test_items = (ds.subset(parts[k]) for k in ("train", "val", "test"))
    train_seconds = history["seconds"]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(data).name if data not in (BCCD, COVID_LUNGS) else data).strip("-")
    run = Path(out) if out else home_dir() / "runs" / f"{stem}-fcos-{arch}-{time.strftime('%Y%m%d-%H%M%S')}"
    run.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, str(run / WEIGHTS_FILE))
    onnx_note = None
    if options.get("export_onnx", options.get("export", "onnx") != "none"):
        try:
            export_onnx(net, det_cfg, run / ONNX_FILE, (32 * -(-int(cfg.long_side * 0.75) // 32), cfg.long_side))
        except Exception as exc:  # noqa: BLE001 - the torch path still works; say why
            (run / ONNX_FILE).unlink(missing_ok=True)
            onnx_note = f"ONNX export failed ({type(exc).__name__}: {exc}); predict uses torch"
            say(onnx_note)
    package: dict[str, Any] = {
        "format": "meddx-model/1",
        "meddx_version": __version__,
        "name": str(options.get("name") or f"{stem}-fcos-{arch}"),
        "version": time.strftime("%Y%m%d%H%M%S"),
        "modality": "image",
        "task": "detection",
        "model": arch,
        "architecture": f"fcos-{arch} (torchvision FCOS, FPN P3-P5, {det_cfg.head_convs}-conv GroupNorm head)",
        "num_classes": len(ds.classes),
        "class_names": list(ds.classes),
        "positive_class": None,
        "preprocess": {"colour": "RGB", "long_side": cfg.long_side, "pad_multiple": 32,
                       "mean": list(det_cfg.mean), "std": list(det_cfg.std),
                       "note": "long side scaled to long_side, padded to multiples of 32 with the mean"},
        "input_size": [32 * -(-int(cfg.long_side * 0.75) // 32), cfg.long_side],
        "detector": det_cfg.to_dict(),
        "nms_iou": 0.5,
        "pretrained": ("user ImageNet state dict" if options.get("imagenet") else "none (trained from scratch)"),
        "files": {},
        "extra_files": [ONNX_FILE] if (run / ONNX_FILE).is_file() else [],
        "onnx": {"file": ONNX_FILE, "outputs": "cls_i, reg_i, ctr_i per level (strides 8, 16, 32)",
                 "decode": "meddx.tasks.detection.decode (numpy)"} if (run / ONNX_FILE).is_file() else None,
        "data": {"source": ds.source, "dataset": data if data in (BCCD, COVID_LUNGS) else None,
                 "train": len(train_items), "val": len(val_items), "test": len(test_items),
                 "split": ("the data set's own ImageSets/Main split" if ds.splits and data == BCCD or
                           (ds.splits and all(ds.splits.get(k) for k in ("train", "val", "test")))
                           else f"by group (patient where known), seeded ({seed})"),
                 "rejected_files": [{"file": n, "reason": r} for n, r in ds.rejected]},
        "splits": {k: list(v) for k, v in parts.items()},
        "training": {"seconds": train_seconds, "epochs": cfg.epochs, "seed": seed, "threads": cfg.threads,
                     "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(cfg).items()},
                     "best_epoch": history["best_epoch"], "best_val_map50": history["best_val_map50"],
                     "stopped_by_time_budget": history["stopped_by_time_budget"], "history": history["epochs"],
                     "torch": torch.__version__},
        "intended_input": {"min_side": MIN_SIDE, "median_size": [int(np.median([it.width for it in ds.items])),
                                                                 int(np.median([it.height for it in ds.items]))]},
        "intended_use": INTENDED_USE,
    }
    if onnx_note:
        package["warnings"] = [onnx_note]
    det = Detector(run, package)
    from meddx.tasks.detection.metrics import detection_map

    # test-time flips where the training flipped too (cells; never X-rays, whose left and right are labels),
    # kept when they raise the validation mAP@0.5
    tried = {}
    for views in ([], ["hflip"], ["hflip", "vflip"]) if cfg.rotate and cfg.hflip and val_items else ([],):
        package["tta"] = views
        dets_v, _ = _detect_items(det, val_items)
        score = detection_map(_gt(val_items), dets_v, ds.classes)["map50"] if val_items else 0.0
        tried["+".join(views) or "none"] = round(score, 4)
        if views == [] or score > best_score + 1e-4:
            best_score, best_views, val_dets = score, views, dets_v
    package["tta"] = best_views
    package["tta_fit"] = {"split": "val", "map50": tried}
    say(f"test-time flips on validation (mAP@0.5): {tried}; kept {best_views or 'none'}")
    thr, f1 = best_threshold(_gt(val_items), val_dets) if val_items else (0.3, float("nan"))
    package["score_threshold"] = thr
    package["score_threshold_fit"] = {"split": "val", "criterion": "micro F1 at IoU 0.5", "f1": f1}
    n_boot = int(options.get("n_boot", 1000))
    test_dets, spi = _detect_items(det, test_items)
    result = _result(package, test_items, test_dets, data=data, split="test", n_boot=n_boot, seed=seed,
                     seconds_per_image=spi)
    package["metrics"] = {"data": data, "split": "test", "n": result["n"], "n_boot": n_boot, "resampling": "images",
                          "values": result["metrics"], "per_class": result["per_class"]}
    package["inference"] = {"backend": det.backend, "seconds_per_image": result["seconds_per_image"]}
    package["training"]["total_seconds"] = round(time.perf_counter() - t_start, 1)
    write_package(run, package)
    (run / "metrics.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    from meddx.packaging.card import write_card_or_say

    write_card_or_say(run, package, say)
    m = result["metrics"]
    say(f"test mAP@0.5 {m['map50']['value']:.3f} [{m['map50']['low']:.3f}, {m['map50']['high']:.3f}], "
        f"mAP@0.5:0.95 {m['map50_95']['value']:.3f}; " +
        ", ".join(f"{c} AP50 {v['ap50']:.3f}" for c, v in result["per_class"].items() if v["ap50"] is not None))
    return run


# --------------------------------------------------------------------------- evaluate
def evaluate(folder: Path, package: dict[str, Any], data: str, *, split: str | None = None, n_boot: int = 1000,
             out: Path | None = None, seed: int = 0, positive: str | None = None) -> dict[str, Any]:
    """mAP@0.5, mAP@0.5:0.95 and per-class AP with bootstrap CIs over images.

    On the package's own data set the default partition is its recorded test split (never seen in
    training); ``split`` may name ``train``, ``val``, ``test`` or ``all``. On another folder every
    image is used (or its own ``ImageSets/Main/<split>.txt``). Class names must match the package's.
    """
    if positive is not None:
        raise ConfigError("--positive applies to binary classifiers, not detectors", field="positive")
    own = data in ((package.get("data") or {}).get("dataset"), (package.get("data") or {}).get("source"))
    ds = load_detection_data(data, errors="skip")
    names = list(package["class_names"])
    unknown = [c for c in ds.classes if c not in names]
    if unknown:
        raise ConfigError(f"the data has classes {unknown} the model does not know", path=ds.source, field="classes",
                          hint=f"The model detects {names}")
    remap = np.array([names.index(c) for c in ds.classes], dtype=np.int64)
    for it in ds.items:
        it.labels = remap[it.labels] if it.labels.size else it.labels
    chosen = split or ("test" if own else "all")
    if chosen == "all":
        items = ds.items
    elif own:
        wanted = (package.get("splits") or {}).get(chosen)
        if wanted is None:
            raise ConfigError(f"the package records no {chosen!r} split", field="split",
                              hint="Choose test, val, train or all")
        items = ds.subset(wanted)
    else:
        if not ds.splits or chosen not in ds.splits:
            raise ConfigError(f"{data} has no {chosen!r} split", field="split", hint="Drop --split to use every image")
        items = ds.subset(ds.splits[chosen])
    if not items:
        raise ConfigError(f"no image in split {chosen!r}", field="split")
    det = Detector(Path(folder), package)
    dets, spi = _detect_items(det, items)
    result = _result(package, items, dets, data=data, split=chosen, n_boot=n_boot, seed=seed, seconds_per_image=spi)
    result["backend"] = det.backend
    result["rejected_files"] = [{"file": n, "reason": r} for n, r in ds.rejected]
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    return result


# --------------------------------------------------------------------------- predict
def _overlay(rgb: np.ndarray, boxes: list[dict[str, Any]], names: list[str], path: Path) -> Path:
    from PIL import Image, ImageDraw

    im = Image.fromarray(rgb)
    draw = ImageDraw.Draw(im)
    width = max(1, round(max(rgb.shape[:2]) / 320))
    for b in reversed(boxes):  # highest score drawn last, on top
        colour = COLOURS[names.index(b["label"]) % len(COLOURS)]
        x0, y0, x1, y1 = b["box"]
        draw.rectangle([x0, y0, x1, y1], outline=colour, width=width)
        draw.text((x0 + 2, y0 + 1), f"{b['label']} {b['score']:.2f}", fill=colour)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
    return path


def predict(folder: Path, package: dict[str, Any], inputs: list[str], **options: Any) -> list[dict[str, Any]]:
    """One :class:`~meddx.inference.schema.Prediction` dict per image in ``inputs``.

    ``boxes`` (highest score first, in the input's pixels) keep the detections at or above the
    package's ``score_threshold`` (``options["score_threshold"]`` overrides it), ``counts`` holds the
    boxes per class, ``probabilities`` the highest score per class, ``prediction`` the most
    frequent class. An overlay PNG goes to ``out_dir`` / ``explain_dir`` (else the current folder).
    An unreadable or too small image gets a ``rejected`` prediction naming the reason; the batch
    goes on. With ``model.onnx`` present this path does not import torch.
    """
    from meddx.inference.schema import Box, Decision, Explanation, InputCheck, Prediction, Uncertainty
    from meddx.trust.decide import decide

    if not inputs:
        raise ConfigError("no input files", field="files", hint="Pass image files (PNG, JPEG, ...)")
    if package.get("task") != "detection":
        raise ModelError(f"not a detection model (task {package.get('task')!r})", path=folder, field="task")
    names = list(package["class_names"])
    thr = float(options.get("score_threshold") or package.get("score_threshold", 0.3))
    out_dir = Path(options.get("out_dir") or options.get("explain_dir") or ".")
    base = {"modality": "image", "model": str(package.get("name")), "model_version": str(package.get("version")),
            "class_names": names, "intended_use": package.get("intended_use")}
    det = Detector(Path(folder), package)
    seen = (package.get("intended_input") or {}).get("median_size")
    notes = []
    if options.get("uncertainty") not in (None, "auto", "none"):
        notes.append(f"uncertainty {options['uncertainty']!r} is not available for detection models; method none")
    if options.get("explain"):
        notes.append("saliency maps are not available for detection models; the overlay shows the boxes")
    results = []
    for item in inputs:
        try:
            rgb = read_rgb(item)
            h, w = rgb.shape[:2]
            if min(h, w) < MIN_SIDE:
                raise ConfigError(f"the image is {w}x{h} pixels; this model needs at least {MIN_SIDE} per side",
                                  path=item, field="size")
            boxes, scores, labels = det.detect(rgb, score_thresh=min(thr, 0.05))
        except MeddxError as exc:
            results.append(_rejected(str(item), str(exc), base))
            continue
        except Exception as exc:  # noqa: BLE001 - name the file whatever went wrong, and go on with the batch
            results.append(_rejected(str(item), f"{item}: {type(exc).__name__}: {exc}", base))
            continue
        probs = {c: float(scores[labels == i].max()) if np.any(labels == i) else 0.0 for i, c in enumerate(names)}
        keep = scores >= thr
        found = [{"label": names[int(lab)], "score": float(s), "box": [round(float(v), 1) for v in b]}
                 for b, s, lab in zip(boxes[keep], scores[keep], labels[keep])]
        counts = {c: int(np.sum(labels[keep] == i)) for i, c in enumerate(names)}
        warns = []
        if seen and max(w, h) and abs(np.log(max(w, h) / max(seen))) > np.log(2):
            warns.append(f"the image is {w}x{h}; the model was trained on images of about {seen[0]}x{seen[1]}: "
                         "objects may appear at a scale it has not seen")
        overlay = _overlay(rgb, found, names, out_dir / f"{Path(item).stem}_boxes.png")
        if found:
            top = max(counts, key=lambda c: counts[c])
            listed = ", ".join(f"{counts[c]} {c}" for c in names if counts[c])
            trust = {"decision": top, "reason": f"{len(found)} objects at score >= {thr:.2f}: {listed}"}
        else:
            top = None
            trust = {"decision": "refer", "reason": f"no object scored >= {thr:.2f}; check the image"}
        results.append(Prediction(
            input=str(item), task="detection", **base, probabilities=probs, calibrated_probabilities=dict(probs),
            calibration="identity", prediction=top,
            uncertainty=Uncertainty(method="none", samples=1, predictive_entropy=0.0, expected_entropy=0.0,
                                    mutual_information=0.0, max_probability=float(max(probs.values(), default=0.0))),
            decision=Decision(**decide(trust)), input_check=InputCheck(passed=True),
            boxes=[Box(**b) for b in found], counts=counts, warnings=[*warns, *notes],
            explanation=Explanation(method="boxes", target=top or "none", overlay=str(overlay)),
        ))
    return [p.to_json_dict() for p in results]


def _rejected(item: str, reason: str, base: dict[str, Any]) -> Any:
    from meddx.inference.schema import Prediction

    return Prediction.rejected(input=item, reasons=[reason], **base).model_copy(update={"task": "detection"})


__all__ = ["MODELS", "OPTIONS", "evaluate", "predict", "train", "write_run"]
