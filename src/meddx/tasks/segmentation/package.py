"""The (image, segmentation) handler: ``train``, ``evaluate`` and ``predict`` for vessel segmentation.

``meddx train chase-db1-retina-vessel-seg`` (or a folder of images with ``NAME_mask.png``
masks, see :mod:`meddx.tasks.segmentation.data`) writes a run folder: ``package.json``
(modality ``image``, task ``segmentation``, preprocessing, patch size, threshold,
temperature, test metrics with bootstrap CIs, file lists, training time), the weights
(``model.safetensors``), ``model.onnx`` / ``model_mc.onnx`` (prediction without torch),
``metrics.json`` and the model card. See docs/segmentation.md.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from meddx.exceptions import ConfigError
from meddx.modalities import check_options
from meddx.tasks.segmentation import data as D
from meddx.tasks.segmentation import metrics as M

CLASS_NAMES = ["background", "vessel"]
STEPS_PER_EPOCH = 200
"""One "epoch" of patch training = this many batches (``--epochs`` counts them)."""
_CONFIG_OPTIONS = {"patch": int, "batch": int, "lr": float, "preprocessing": str, "time_limit_s": float,
                   "eval_every": int, "roi": int, "overlap": float, "dropout": float}
"""Training options that set a :class:`~meddx.tasks.segmentation.training.TrainConfig` field, with their type."""
TRAIN_OPTIONS = {*_CONFIG_OPTIONS, "steps", "batch_size", "max_train_images", "val_fraction", "n_boot", "threads",
                 "tta"}
PREDICT_OPTIONS = {"uncertainty", "samples", "out_dir", "explain_dir", "backend", "threads", "explain",
                   "threshold", "slice_index"}
UNCERTAINTY = ("auto", "none", "mc-dropout")
MC_SAMPLES = 4
"""MC-dropout draws per image when ``uncertainty`` is ``auto`` or ``mc-dropout`` and no ``samples`` is given."""


# --------------------------------------------------------------------------- train
def _prepare(samples: list[D.Sample], preprocessing: str) -> list[Any]:
    from meddx.tasks.segmentation.fov import field_of_view
    from meddx.tasks.segmentation.training import Prepared

    out = []
    for s in samples:
        image, mask = D.load(s)
        fov = field_of_view(image)
        second = D.read_mask(s.second, image.shape[:2], image=s.image) if s.second else None
        out.append(Prepared(s.name, D.preprocess(image, fov, preprocessing), mask, fov, second))
    return out


def _calibration_pixels(logits: np.ndarray, labels: np.ndarray, limit: int = 400_000,
                        seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    if logits.size <= limit:
        return logits, labels
    pick = np.random.default_rng(seed).choice(logits.size, limit, replace=False)
    return logits[pick], labels[pick]


def operating_point(seg: Any, images: list[Any], *, seed: int = 0) -> dict[str, Any]:
    """Temperature (NLL) and threshold (maximal pooled F1 of the calibrated probability) fitted on ``images``
    (prepared validation images) through the model's own inference path; pixel ECE before and after."""
    logits = np.concatenate([seg.logits(img.x)[img.fov] for img in images])
    labels = np.concatenate([img.mask[img.fov] for img in images])
    temperature = M.fit_temperature(*_calibration_pixels(logits, labels, seed=seed))
    prob = 1 / (1 + np.exp(-logits / temperature))
    return {"temperature": temperature, "threshold": M.best_threshold(prob, labels),
            "validation_ece": {"raw": M.ece(1 / (1 + np.exp(-logits)), labels), "calibrated": M.ece(prob, labels)}}


def choose_tta(run: Path, package: dict[str, Any], val: list[Any], tta: Any,
               say: Any = lambda _m: None) -> dict[str, Any]:
    """``{"tta": bool, "tta_choice": ...}``: flip test-time augmentation on when ``tta`` is true, off when false,
    and with ``"auto"`` (the default) on only if it raises the validation AUC (pooled FOV pixels)."""
    from sklearn.metrics import roc_auc_score

    from meddx.tasks.segmentation.model import SegModel

    if isinstance(tta, str) and tta.lower() not in ("auto", "true", "false", "1", "0", "yes", "no"):
        raise ConfigError(f"tta must be auto, true or false, not {tta!r}", field="tta",
                          hint="Leave it out (auto: chosen on the validation images) or give true/false")
    if not (isinstance(tta, str) and tta.lower() == "auto"):
        on = tta if isinstance(tta, bool) else str(tta).lower() in ("true", "1", "yes")
        return {"tta": bool(on), "tta_choice": {"rule": "set by the tta option"}}
    labels = np.concatenate([img.mask[img.fov] for img in val])
    auc = {}
    for flag in (False, True):
        variant = {**package, "segmentation": {**package["segmentation"], "tta": flag}}
        model = SegModel(run, variant)
        auc[flag] = float(roc_auc_score(labels, np.concatenate([model.logits(img.x)[img.fov] for img in val])))
    on = auc[True] > auc[False]
    say(f"flip TTA {'on' if on else 'off'}: validation AUC {auc[True]:.4f} with, {auc[False]:.4f} without")
    return {"tta": on, "tta_choice": {"rule": "on if it raises the pooled validation AUC", "val_auc_plain":
                                      round(auc[False], 5), "val_auc_tta": round(auc[True], 5)}}


def train(data: str, *, model: str | None = None, seed: int = 0, epochs: int | None = None, out: Path | None = None,
          progress: bool = True, **options: Any) -> Path:
    """Train a vessel segmentation model on ``data``; return the run folder (a model package).

    The training images are split once more: the last ``val_fraction`` (20 %; for CHASE_DB1
    the 4 images of children 9-10) are held out to pick the best training step, fit the
    temperature and choose the threshold (maximal F1); the test images are only scored.
    """
    import torch

    from meddx import __version__
    from meddx.config import home_dir
    from meddx.packaging.registry import write_package
    from meddx.tasks.segmentation.model import SegModel, save
    from meddx.tasks.segmentation.network import DEFAULT, NETWORKS
    from meddx.tasks.segmentation.training import TrainConfig, train_network

    check_options(options, TRAIN_OPTIONS, what="training", kind="segmentation models")
    network = model or DEFAULT
    if network not in NETWORKS:
        raise ConfigError(f"unknown segmentation network {network!r}", field="model",
                          hint=f"Use one of {sorted(NETWORKS)}")
    if options.get("threads"):
        torch.set_num_threads(int(options["threads"]))
    say = (lambda m: print(m, flush=True)) if progress else (lambda _m: None)
    t_start = time.perf_counter()
    parts = D.split(data)
    train_samples = parts["train"][: options.get("max_train_images") or None]
    n_val = max(1, round(float(options.get("val_fraction", 0.2)) * len(train_samples)))
    if len(train_samples) < 2:
        raise ConfigError(f"{len(train_samples)} training image(s): need at least 2 (one to learn, one to "
                          "validate)", field="max_train_images", hint="Give more images")
    fit_samples, val_samples = train_samples[:-n_val], train_samples[-n_val:]
    cfg = TrainConfig(network=network, seed=seed)
    if options.get("batch_size") is not None:  # `meddx train --batch-size`
        options.setdefault("batch", options["batch_size"])
    for key, kind in _CONFIG_OPTIONS.items():
        if options.get(key) is not None:
            setattr(cfg, key, kind(options[key]))
    cfg.steps = int(options.get("steps") or (epochs * STEPS_PER_EPOCH if epochs else cfg.steps))
    if cfg.preprocessing not in D.PREPROCESSING:
        raise ConfigError(f"unknown preprocessing {cfg.preprocessing!r}", field="preprocessing",
                          hint=f"Use one of {list(D.PREPROCESSING)}")
    say(f"{len(fit_samples)} training, {len(val_samples)} validation, {len(parts['test'])} test images; "
        f"{network}, {cfg.steps} steps of {cfg.batch} patches of {cfg.patch} px")
    fit, val = _prepare(fit_samples, cfg.preprocessing), _prepare(val_samples, cfg.preprocessing)
    smallest = min(fit, key=lambda img: min(img.mask.shape))
    if cfg.patch > min(smallest.mask.shape) or cfg.patch % 8:
        raise ConfigError(f"patch {cfg.patch} px does not fit image {smallest.name} "
                          f"({smallest.mask.shape[0]}×{smallest.mask.shape[1]}) or is not a multiple of 8",
                          field="patch", hint="Give a multiple of 8 no larger than the smallest training image")
    net, info = train_network(fit, val, cfg, log=say)
    vessel_fractions = [float(img.mask[img.fov].mean()) for img in fit + val]
    source, kind = D.resolve(data)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", data if kind == "chase" and data == D.CHASE else source.name)
    stem = stem.strip("-") or "segmentation"
    run = Path(out) if out else home_dir() / "runs" / f"{stem}-{network}-{time.strftime('%Y%m%d-%H%M%S')}"
    run.mkdir(parents=True, exist_ok=True)
    extra = save(run, net, fit[0].x.shape[0])
    package: dict[str, Any] = {
        "format": "meddx-model/1",
        "meddx_version": __version__,
        "name": f"{stem}-{network}",
        "version": time.strftime("%Y%m%d%H%M%S"),
        "modality": "image",
        "task": "segmentation",
        "model": network,
        "architecture": f"monai {network} (2-D, 1 output channel: vessel logit)",
        "num_classes": 2,
        "class_names": CLASS_NAMES,
        "positive_class": "vessel",
        "segmentation": {
            "network": network, "in_channels": int(fit[0].x.shape[0]), "preprocessing": cfg.preprocessing,
            "patch": cfg.patch, "roi": cfg.roi, "overlap": cfg.overlap, "window": "gaussian (sigma 0.125 roi)",
            "dropout": cfg.dropout, "tta": False, "temperature": 1.0, "threshold": 0.5,
            "threshold_rule": "maximal pooled F1 on the validation images (calibrated probability)",
            "field_of_view": "red channel > 20, opening/closing (7 px disc), largest region, holes filled, "
                             "eroded 2 px (meddx.tasks.segmentation.fov)",
            "vessel_fraction_range": [min(vessel_fractions), max(vessel_fractions)],
        },
        "preprocess": {"method": cfg.preprocessing, "description": D.PREPROCESSING[cfg.preprocessing],
                       "field_of_view": "derived from the image (red channel), metrics and predictions inside it"},
        "extra_files": extra,
        "data": {"source": data, "dataset": D.CHASE if kind == "chase" else None, "train": len(fit_samples),
                 "val": len(val_samples), "test": len(parts["test"]),
                 "split": "CHASE_DB1 common split: images 1-20 train (last 4 validation), 21-28 test"
                          if kind == "chase" else "folder split (train/test subfolders or the last 30 % test)"},
        "splits": {"train": [s.name for s in fit_samples], "val": [s.name for s in val_samples],
                   "test": [s.name for s in parts["test"]]},
        "training": {**{k: v for k, v in info.items() if k != "history"}, "seed": seed, "patch": cfg.patch,
                     "batch": cfg.batch, "lr": cfg.lr, "loss": "Dice + BCE",
                     "sampling": f"{cfg.vessel_fraction:.0%} of patches centred on vessel pixels",
                     "augmentation": "rot90, flip, gain 0.8-1.2, offset N(0, 0.15)",
                     "history": info.get("history", [])},
        "intended_use": "Research: retinal vessel maps of colour fundus photographs; not for diagnosis on its own.",
    }
    # test-time flips, calibration and threshold on the validation images only, through the package's own
    # inference path
    package["segmentation"].update(choose_tta(run, package, val, options.get("tta", "auto"), say))
    point = operating_point(SegModel(run, package), val, seed=seed)
    package["segmentation"].update(point)
    threshold = point["threshold"]
    say(f"temperature {point['temperature']:.3f}, threshold {threshold:.3f}, validation pixel ECE "
        f"{point['validation_ece']['raw']:.4f} → {point['validation_ece']['calibrated']:.4f}")
    write_package(run, package)
    n_boot = int(options.get("n_boot", 1000))
    if parts["test"]:
        result = _evaluate_samples(SegModel(run, package), package, parts["test"], data=data, split="test",
                                   n_boot=n_boot, seed=seed)
        package["metrics"] = {"data": data, "split": "test", "n": result["n"], "n_boot": n_boot,
                              "resampling": "images", "positive_class": "vessel", "threshold": threshold,
                              "values": result["metrics"], "per_image": result["per_image_spread"],
                              "second_observer": result.get("second_observer"), "ece": result.get("ece")}
        (run / "metrics.json").write_text(json.dumps(result, indent=2, default=_jsonable), encoding="utf-8")
        m = result["metrics"]
        say(f"test ({result['n']} images): F1 {m['f1']['value']:.4f} [{m['f1']['low']:.4f}, {m['f1']['high']:.4f}]"
            f", AUC {m['auc']['value']:.4f} [{m['auc']['low']:.4f}, {m['auc']['high']:.4f}], sensitivity "
            f"{m['sensitivity']['value']:.4f}, specificity {m['specificity']['value']:.4f}")
    package["training"]["seconds"] = round(time.perf_counter() - t_start, 1)
    package["training"]["train_seconds"] = info["seconds"]
    write_package(run, package)
    from meddx.packaging.card import write_card_or_say

    write_card_or_say(run, package, say)
    return run


# --------------------------------------------------------------------------- evaluate
def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _evaluate_samples(seg: Any, package: dict[str, Any], samples: list[D.Sample], *, data: str, split: str,
                      n_boot: int, seed: int) -> dict[str, Any]:
    threshold = seg.threshold
    scores, second, probs, labels, raw_probs = [], [], [], [], []
    for s in samples:
        image, mask = D.load(s)
        if mask is None:
            raise ConfigError(f"no reference mask for {s.name}", path=s.image, field="mask",
                              hint="Evaluation needs a mask for every image")
        x, fov = seg.prepare(image)
        logits = seg.logits(x)
        prob = 1 / (1 + np.exp(-logits / seg.temperature))
        scores.append(M.score_image(s.name, prob, mask, fov, threshold))
        probs.append(prob[fov].astype(np.float32))
        raw_probs.append((1 / (1 + np.exp(-logits[fov]))).astype(np.float32))
        labels.append(mask[fov])
        if s.second is not None:
            other = D.read_mask(s.second, image.shape[:2], image=s.image)
            second.append(M.score_image(s.name, other, mask, fov, binary=True))
    rows = [M.per_image(sc) for sc in scores]
    p, y = np.concatenate(probs), np.concatenate(labels)
    result: dict[str, Any] = {
        "model": package.get("name"), "version": package.get("version"), "task": "segmentation", "data": data,
        "split": split, "n": len(scores), "n_groups": len(scores), "resampling": "images", "n_boot": n_boot,
        "class_names": CLASS_NAMES, "positive_class": "vessel", "threshold": threshold,
        "pixels": int(y.size), "vessel_pixels": int(y.sum()),
        "metrics": M.bootstrap(scores, n_boot=n_boot, seed=seed),
        "metrics_scope": "inside the derived field of view, pooled over all pixels of the images; CIs: percentile "
                         "bootstrap over images",
        "per_image": rows, "per_image_spread": M.spread(rows),
        "ece": M.ece(p, y), "ece_uncalibrated": M.ece(np.concatenate(raw_probs), y),
        "images": [s.name for s in samples],
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if second:
        rows2 = [M.per_image(sc) for sc in second]
        result["second_observer"] = {
            "description": "second human observer's mask scored against the reference (first observer)",
            "n": len(second), "metrics": M.bootstrap(second, n_boot=n_boot, seed=seed),
            "per_image": rows2, "per_image_spread": M.spread(rows2)}
    return result


def evaluate(folder: Path, package: dict[str, Any], data: str, *, split: str | None = None, n_boot: int = 1000,
             out: Path | None = None, seed: int = 0, positive: str | None = None) -> dict[str, Any]:
    """Score a segmentation package on ``data``: its test images by default (never seen in training).

    ``split``: ``test``, ``train``, ``val`` (the package's recorded lists when ``data`` is the
    data it was trained on) or ``all``. For another folder the default is every image.
    """
    from meddx.tasks.segmentation.model import SegModel

    if positive not in (None, "vessel"):
        raise ConfigError(f"the positive class of a vessel segmentation model is 'vessel', not {positive!r}",
                          field="positive")
    parts = D.split(data)
    everything = parts["train"] + parts["test"]
    same = (package.get("data") or {}).get("source") == data or (
        D.resolve(data)[1] == "chase" and (package.get("data") or {}).get("dataset") == D.CHASE)
    chosen = split or ("test" if same else "all")
    if chosen == "all":
        samples = everything
    else:
        names = (package.get("splits") or {}).get(chosen)
        if not same or names is None:
            raise ConfigError(f"no {chosen!r} split recorded for {data}", field="split",
                              hint="Use --split all, or evaluate on the data the model was trained on")
        by_name = {s.name: s for s in everything}
        samples = [by_name[n] for n in names if n in by_name]
    if not samples:
        raise ConfigError(f"no image in split {chosen!r}", field="split", hint="Use --split all")
    result = _evaluate_samples(SegModel(Path(folder), package), package, samples, data=data, split=chosen,
                               n_boot=n_boot, seed=seed)
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(result, indent=2, default=_jsonable), encoding="utf-8")
    return result


# --------------------------------------------------------------------------- predict
def _entropy(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-7, 1 - 1e-7)
    return -(q * np.log(q) + (1 - q) * np.log(1 - q))


def _png(path: Path, array: np.ndarray) -> str:
    from PIL import Image

    Image.fromarray(array).save(path)
    return str(path)


def _overlay(image: np.ndarray, mask: np.ndarray, fov: np.ndarray) -> np.ndarray:
    out = image.astype(np.float32).copy()
    out[~fov] *= 0.5
    colour = np.array([0, 255, 80], np.float32)
    out[mask] = 0.35 * out[mask] + 0.65 * colour
    return out.clip(0, 255).astype(np.uint8)


def _predict_one(seg: Any, package: dict[str, Any], item: str, out_dir: Path, stem: str, method: str, samples: int,
                 threshold: float, base: dict[str, Any]) -> dict[str, Any]:
    from meddx.inference.schema import Decision, InputCheck, Mask, Prediction, Uncertainty
    from meddx.trust.decide import decide

    image = D.read_image(Path(item))
    if min(image.shape[:2]) < 16:
        raise ConfigError(f"image is {image.shape[0]}×{image.shape[1]} pixels, too small to segment",
                          path=item, field="shape", hint="Give an image at least 16 pixels on each side")
    x, fov = seg.prepare(image)
    if method == "mc-dropout":
        prob, sd, draw_entropy = seg.mc_dropout(x, fov, samples)
        single = seg.probability(x, fov)  # the deterministic map decides; the draws give the spread
    else:
        single = seg.probability(x, fov)
        prob, sd, draw_entropy = single, None, None
    mask = (single >= threshold) & fov
    n_fov = max(int(fov.sum()), 1)
    fraction = float(mask.sum()) / n_fov
    paths = {
        "mask": _png(out_dir / f"{stem}_mask.png", mask.astype(np.uint8)),
        "probability_map": _png(out_dir / f"{stem}_probability.png", np.round(single * 255).astype(np.uint8)),
        "overlay": _png(out_dir / f"{stem}_overlay.png", _overlay(image, mask, fov)),
    }
    h_pred = float(_entropy(prob[fov]).mean())
    if sd is not None:
        paths["uncertainty_map"] = _png(out_dir / f"{stem}_uncertainty.png",
                                        np.round(np.clip(sd / 0.5, 0, 1) * 255).astype(np.uint8))
        expected = min(float(draw_entropy[fov].mean()), h_pred)
        mean_unc = float(sd[mask].mean()) if mask.any() else float(sd[fov].mean())
    else:
        expected, mean_unc = h_pred, None
    present = float(single[fov].max()) if fov.any() else 0.0
    lo, hi = (package.get("segmentation") or {}).get("vessel_fraction_range", [0.0, 1.0])
    label = "vessel" if mask.any() else "background"
    warnings = []
    if fraction < lo / 2 or fraction > hi * 2:
        trust = {"decision": "refer", "reason": f"vessel fraction {fraction:.1%} of the field of view is far from the "
                 f"{lo:.1%}-{hi:.1%} seen in training; check the image and the segmentation"}
        warnings.append(trust["reason"])
    else:
        trust = {"decision": label, "reason": f"vessels cover {fraction:.1%} of the field of view (threshold "
                 f"{threshold:.3f} on the calibrated vessel probability)"}
    if float(fov.mean()) < 0.2:
        warnings.append(f"the derived field of view covers only {float(fov.mean()):.0%} of the image")
    return Prediction(
        input=item, **base,
        task="segmentation",
        probabilities={"background": 1 - present, "vessel": present},
        calibrated_probabilities={"background": 1 - present, "vessel": present},
        calibration=f"temperature {seg.temperature:.3f} (per pixel)",
        prediction=label,
        uncertainty=Uncertainty(method=method, samples=samples if method == "mc-dropout" else 1,
                                predictive_entropy=h_pred, expected_entropy=expected,
                                mutual_information=max(h_pred - expected, 0.0), max_probability=max(present, 1 - present)),
        decision=Decision(**decide(trust)),
        input_check=InputCheck(passed=True),
        mask=Mask(classes=CLASS_NAMES, shape=list(mask.shape), fraction={"background": 1 - fraction, "vessel": fraction},
                  mean_uncertainty=mean_unc, **paths),
        warnings=warnings,
    ).to_json_dict()


def predict(folder: Path, package: dict[str, Any], inputs: list[str], **options: Any) -> list[dict[str, Any]]:
    """One :class:`~meddx.inference.schema.Prediction` dict per image in ``inputs`` (mask, probability,
    uncertainty and overlay PNGs written to ``out_dir``, else ``explain_dir``, else the current folder).

    A file that cannot be read or used gets a ``rejected`` prediction with the reason; the batch goes on.
    Options: ``uncertainty`` (``auto`` = ``mc-dropout``, ``none``), ``samples`` (MC-dropout draws, default
    4), ``backend`` (``auto``: ONNX Runtime when ``model.onnx`` exists, no torch import; ``torch``),
    ``threads``, ``threshold`` (overrides the package's).
    """
    from meddx.tasks.segmentation.model import SegModel

    check_options(options, PREDICT_OPTIONS, what="predict", kind="segmentation models")
    if not inputs:
        raise ConfigError("no input files", field="files", hint="Pass fundus images (.png, .jpg)")
    method = options.get("uncertainty") or "auto"
    if method not in UNCERTAINTY:
        raise ConfigError(f"unknown uncertainty method {method!r} for segmentation models", field="uncertainty",
                          hint=f"Use one of {list(UNCERTAINTY)}")
    method = "mc-dropout" if method == "auto" else method
    samples = int(options.get("samples") or MC_SAMPLES)
    if method == "mc-dropout" and samples < 2:
        raise ConfigError(f"samples={samples}: MC-dropout needs at least 2 draws", field="samples")
    out_dir = Path(options.get("out_dir") or options.get("explain_dir") or ".")
    out_dir.mkdir(parents=True, exist_ok=True)
    seg = SegModel(Path(folder), package, backend=options.get("backend") or "auto", threads=options.get("threads"))
    threshold = float(options["threshold"]) if options.get("threshold") is not None else seg.threshold
    base = {"modality": "image", "model": str(package.get("name")), "model_version": str(package.get("version")),
            "class_names": CLASS_NAMES, "intended_use": package.get("intended_use")}
    notes = []
    if options.get("explain"):
        notes.append("saliency explanations are not available for segmentation models; see mask.overlay")
    if options.get("slice_index") is not None:
        notes.append("--slice applies to 3-D volumes; segmentation models read 2-D images, the option is ignored")
    from meddx.inference.batch import predict_each

    def one(item: str, stem: str) -> dict[str, Any]:
        result = _predict_one(seg, package, item, out_dir, stem, method, samples, threshold, base)
        result["warnings"] = [*result["warnings"], *notes]
        return result

    return predict_each(inputs, one, base=base, task="segmentation")


__all__ = ["CLASS_NAMES", "evaluate", "operating_point", "predict", "train"]
