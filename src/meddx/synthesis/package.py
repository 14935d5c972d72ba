"""The (image, restoration) handler: train a low-dose → full-dose restorer, evaluate it, restore files.

``meddx train brain-tumor-mri-navoneel --task restoration`` (or PneumoniaMNIST, the COVID chest
X-rays, a folder) writes a model package: ``package.json`` (modality ``image``, task
``restoration``, the dose model and its parameters, the dose range, splits, test figures per dose
with bootstrap CIs, training time), ``model.safetensors`` and the model card. ``meddx synthesize
denoise MODEL FILE --dose 0.1`` (or ``meddx predict``) writes the restored image with its
"SYNTHETIC" banner, a DICOM marked DERIVED for DICOM inputs, and the hallucination checks of
:mod:`meddx.synthesis.hallucination`. See docs/synthesis.md.
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
from meddx.synthesis import data as SD
from meddx.synthesis import dose as DM

DOSES = (0.25, 0.1, 0.05)
"""Dose fractions every restorer is scored at (validation and test)."""
STEPS_PER_EPOCH = 200
_CONFIG_OPTIONS = {"patch": int, "batch": int, "lr": float, "time_limit_s": float, "eval_every": int, "loss": str,
                   "ssim_weight": float}
TRAIN_OPTIONS = {*_CONFIG_OPTIONS, "steps", "batch_size", "size", "noise", "photons", "mu", "sigma", "dose_min",
                 "dose_max", "max_train_images", "n_boot", "threads"}
PREDICT_OPTIONS = {"dose", "out_dir", "explain_dir", "threads", "classifier", "checks", "backend", "explain",
                   "uncertainty", "slice_index", "samples"}
WEIGHTS = "model.safetensors"


def params_of(package: dict[str, Any]) -> dict[str, float]:
    return dict(package["restoration"].get("params") or {})


def load_net(folder: Path, package: dict[str, Any]) -> Any:
    """The restorer with the package's weights, in eval mode."""
    from safetensors.torch import load_file

    from meddx.exceptions import ModelError
    from meddx.synthesis.networks import build

    weights = Path(folder) / WEIGHTS
    if not weights.is_file():
        raise ModelError(f"no {WEIGHTS} in the package", path=folder, hint="Re-run `meddx train ... --task restoration`")
    net = build(package["restoration"]["network"])
    net.load_state_dict(load_file(str(weights)))
    return net.eval()


# --------------------------------------------------------------------------------------------- train
def train(data: str, *, model: str | None = None, seed: int = 0, epochs: int | None = None, out: Path | None = None,
          progress: bool = True, **options: Any) -> Path:
    """Train a restorer on ``data``; return the run folder (a model package)."""
    import torch
    from safetensors.torch import save_file

    from meddx import __version__
    from meddx.config import home_dir
    from meddx.packaging.registry import write_package
    from meddx.synthesis.networks import DEFAULT, NETWORKS
    from meddx.synthesis.training import TrainConfig, train_restorer

    check_options(options, TRAIN_OPTIONS, what="training", kind="restoration models")
    network = model or DEFAULT
    if network not in NETWORKS:
        raise ConfigError(f"unknown restoration network {network!r}", field="model", hint=f"Use one of {sorted(NETWORKS)}")
    if options.get("threads"):
        torch.set_num_threads(int(options["threads"]))
    say = (lambda m: print(m, flush=True)) if progress else (lambda _m: None)
    t0 = time.perf_counter()
    known = SD.SETS.get(data, {})
    noise = options.get("noise") or known.get("noise")
    if noise is None:
        raise ConfigError("which acquisition noise? a folder does not say", field="noise",
                          hint=f"Give noise= one of {sorted(DM.DOSE_MODELS)} (e.g. meddx train DIR --task restoration "
                               "--set noise=mri-rician)")
    dose_model = DM.get(noise)
    params = dose_model.settings(**{k: options[k] for k in ("photons", "mu", "sigma") if options.get(k) is not None})
    images = SD.load(data, options.get("size"))
    fit = images.splits["train"][: options.get("max_train_images") or None]
    val = images.splits["val"][:24] or fit[-2:]
    if len(fit) < 2:
        raise ConfigError(f"{len(fit)} training image(s): need at least 2", field="data", hint="Give more images")
    cfg = TrainConfig(network=network, seed=seed, params=params,
                      dose_range=(float(options.get("dose_min", 0.03)), float(options.get("dose_max", 0.5))))
    if options.get("batch_size") is not None:
        options.setdefault("batch", options["batch_size"])
    for key, kind in _CONFIG_OPTIONS.items():
        if options.get(key) is not None:
            setattr(cfg, key, kind(options[key]))
    cfg.steps = int(options.get("steps") or (epochs * STEPS_PER_EPOCH if epochs else cfg.steps))
    say(f"{len(fit)} training, {len(val)} validation, {len(images.splits['test'])} test images; {network}, "
        f"{noise} {params}, doses {cfg.dose_range[0]:g}-{cfg.dose_range[1]:g}, {cfg.steps} steps")
    net, info = train_restorer(fit, val, dose_model, cfg, log=say)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(data).name if Path(data).exists() else data).strip("-") or "restore"
    run = Path(out) if out else home_dir() / "runs" / f"{stem}-restore-{network}-{time.strftime('%Y%m%d-%H%M%S')}"
    run.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(run / WEIGHTS))
    shape = sorted({x.shape for x in fit})
    package: dict[str, Any] = {
        "format": "meddx-model/1", "meddx_version": __version__, "name": f"{stem}-restore-{network}",
        "version": time.strftime("%Y%m%d%H%M%S"), "modality": "image", "task": "restoration", "model": network,
        "architecture": f"{network} residual restorer (input: image + noise-level map; output: noise estimate)",
        "num_classes": 0, "class_names": [],
        "restoration": {"network": network, "noise": noise, "noise_description": dose_model.description,
                        "imaging": dose_model.modality, "params": params, "dose_range": list(cfg.dose_range),
                        "doses": list(DOSES), "patch": info["patch"], "image_shapes": [list(s) for s in shape[:3]]},
        "preprocess": {"method": "grey, [0, 1]: 8-bit / 255, 16-bit / 65535, DICOM and floats min-max",
                       "size": options.get("size") or known.get("size")},
        "data": {"source": data, "dataset": data if known else None, "description": known.get("description"),
                 "train": len(fit), "val": len(val), "test": len(images.splits["test"]),
                 "split": images.info.get("split")},
        "splits": {k: v[:2000] for k, v in images.names.items()},
        "training": {**{k: v for k, v in info.items() if k != "history"}, "seed": seed, "batch": cfg.batch,
                     "lr": cfg.lr, "loss": cfg.loss, "ssim_weight": cfg.ssim_weight, "history": info["history"],
                     "dose_sampling": "log-uniform over dose_range, fresh noise per crop"},
        "intended_use": "Research: restoring low-dose images for reading support; every output is marked "
                        "synthetic and must not replace the acquired image.",
    }
    write_package(run, package)
    if images.splits["test"]:
        result = score(net, images.splits["test"], dose_model, params, DOSES, n_boot=int(options.get("n_boot", 1000)),
                       seed=seed)
        package["metrics"] = {"data": data, "split": "test", "n": len(images.splits["test"]), "values": result["metrics"]}
        (run / "metrics.json").write_text(json.dumps(result["metrics"], indent=2), encoding="utf-8")
        for d in DOSES:
            m = result["metrics"]
            say(f"test dose {d:g}: PSNR {m[f'psnr@{d:g}']['value']:.2f} dB (low dose "
                f"{m[f'low_psnr@{d:g}']['value']:.2f}), SSIM {m[f'ssim@{d:g}']['value']:.4f}")
    package["training"]["seconds"] = round(time.perf_counter() - t0, 1)
    write_package(run, package)
    from meddx.packaging.card import write_card_or_say

    write_card_or_say(run, package, say)
    return run


# ------------------------------------------------------------------------------------------ evaluate
def degraded_set(images: list[np.ndarray], dose_model: DM.DoseModel, params: dict[str, float], dose: float,
                 seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Fixed (seeded) low-dose copies of ``images`` and their noise-level maps."""
    rng = np.random.default_rng([seed, int(round(dose * 1e6))])
    observed = [dose_model.degrade(x, dose, rng, **params) for x in images]
    return observed, [dose_model.noise_map(y, dose, **params) for y in observed]


def score(net: Any, images: list[np.ndarray], dose_model: DM.DoseModel, params: dict[str, float],
          doses: tuple[float, ...], *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """PSNR/SSIM of the low-dose input and of the restorer at each dose (bootstrap CIs over images)."""
    from meddx.synthesis import metrics as M
    from meddx.synthesis.training import restore_images

    values: dict[str, Any] = {}
    for d in doses:
        observed, levels = degraded_set(images, dose_model, params, d, seed)
        low = M.per_image(images, observed)
        ours = M.per_image(images, restore_images(net, observed, levels))
        for key in ("psnr", "ssim"):
            values[f"{key}@{d:g}"] = M.mean_ci(ours[key], n_boot=n_boot, seed=seed)
            values[f"low_{key}@{d:g}"] = M.mean_ci(low[key], n_boot=n_boot, seed=seed)
            values[f"gain_{key}@{d:g}"] = M.paired(ours[key], low[key], n_boot=n_boot, seed=seed)
    return {"metrics": values}


def evaluate(folder: Path, package: dict[str, Any], data: str, *, split: str | None = None, n_boot: int = 1000,
             out: Path | None = None, seed: int = 0, positive: str | None = None, **options: Any) -> dict[str, Any]:
    """PSNR/SSIM of low-dose input and restored image at each dose on ``split`` (default test) of ``data``."""
    check_options(options, {"doses", "max_images", "size"}, what="evaluate", kind="restoration models")
    part = split or "test"
    images = SD.load(data, options.get("size") or package.get("preprocess", {}).get("size"))
    if part not in images.splits or not images.splits[part]:
        raise ConfigError(f"no {part} images in {data}", field="split", hint=f"Use one of {sorted(images.splits)}")
    chosen = images.splits[part][: options.get("max_images") or None]
    doses = tuple(float(d) for d in (options.get("doses") or package["restoration"].get("doses") or DOSES))
    result = score(load_net(folder, package), chosen, DM.get(package["restoration"]["noise"]), params_of(package),
                   doses, n_boot=n_boot, seed=seed)
    seen = part in ("train", "val") and str(package.get("data", {}).get("source")) == data
    report = {"model": package.get("name"), "data": data, "split": part, "n": len(chosen), "n_boot": n_boot,
              "metrics": result["metrics"], "doses": list(doses),
              "title": f"{package.get('name')} on {data} ({part}" + (", images the model was trained or tuned on)"
                                                                     if seen else ")")}
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "metrics.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    return report


# ------------------------------------------------------------------------------------------- predict
def restore_array(net: Any, observed: np.ndarray, dose_model: DM.DoseModel, dose: float,
                  params: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """``(restored, noise map)`` of one [0, 1] image acquired at ``dose``."""
    from meddx.synthesis.training import restore_images

    level = dose_model.noise_map(observed, dose, **params)
    return restore_images(net, [observed], [level])[0], level


def _downstream(classifier: str | None, observed: np.ndarray, restored: np.ndarray) -> dict[str, Any] | None:
    if not classifier:
        return None
    from meddx.inference import Pipeline

    pipe = Pipeline.load(classifier)
    to8 = lambda x: np.clip(x * 255 + 0.5, 0, 255).astype(np.uint8)
    p = pipe.predict_arrays(np.stack([to8(observed), to8(restored)]))
    names = list(pipe.package.get("class_names") or [])
    top = [names[int(np.argmax(row))] if names else int(np.argmax(row)) for row in p]
    return {"classifier": str(pipe.package.get("name")), "input": {str(k): float(v) for k, v in zip(names, p[0])},
            "output": {str(k): float(v) for k, v in zip(names, p[1])}, "decision_changed": top[0] != top[1]}


def predict(folder: Path, package: dict[str, Any], inputs: list[str], **options: Any) -> list[dict[str, Any]]:
    """Restore each file in ``inputs`` (acquired at ``dose``); one Prediction dict per file, with the
    synthetic image (banner PNG, raw 16-bit PNG, DICOM DERIVED for DICOM inputs) and its checks.

    Options: ``dose`` (fraction of the full dose the input was acquired at; default: the middle of the
    package's doses, with a warning), ``out_dir``, ``classifier`` (a classifier package: its decision on
    input and output is compared), ``threads``. A file that cannot be read is rejected; the batch goes on.
    """
    from meddx.inference.batch import predict_each
    from meddx.inference.schema import Decision, Prediction, Synthetic
    from meddx.synthesis import derived, hallucination

    check_options(options, PREDICT_OPTIONS, what="predict", kind="restoration models")
    if not inputs:
        raise ConfigError("no input files", field="files", hint="Pass low-dose images (.dcm, .png, .jpg)")
    if options.get("threads"):
        import torch

        torch.set_num_threads(int(options["threads"]))
    doses = package["restoration"].get("doses") or list(DOSES)
    warnings = []
    if options.get("dose") is None:
        dose = float(sorted(doses)[len(doses) // 2])
        warnings.append(f"no dose given: assumed {dose:g} of the full dose (give --dose for the real fraction)")
    else:
        dose = float(options["dose"])
    DM.check_dose(dose)
    low, high = package["restoration"].get("dose_range", [0.03, 0.5])
    if not low <= dose <= max(high, 1.0):
        warnings.append(f"dose {dose:g} is outside the trained range {low:g}-{high:g}; the output is less reliable")
    for key in ("explain", "uncertainty", "slice_index", "samples", "backend"):
        if options.get(key) not in (None, False, "auto", "none"):
            warnings.append(f"--{key.replace('_', '-')} does not apply to restoration models; ignored")
    dose_model = DM.get(package["restoration"]["noise"])
    params = params_of(package)
    net = load_net(Path(folder), package)
    out_dir = Path(options.get("out_dir") or options.get("explain_dir") or ".")
    out_dir.mkdir(parents=True, exist_ok=True)
    method = str(package.get("name"))
    base = {"modality": "image", "model": method, "model_version": str(package.get("version")), "class_names": [],
            "intended_use": package.get("intended_use")}

    def one(item: str, stem: str) -> dict[str, Any]:
        observed, sample = SD.read_file(item)
        restored, level = restore_array(net, observed, dose_model, dose, params)
        check = hallucination.residual(observed, restored, level,
                                       expected=dose_model.expected(restored, dose, **params))
        png, raw = derived.save_png(restored, out_dir / f"{stem}.restored.png", kind="restoration", method=method)
        dicom = None
        if getattr(sample, "format", "") == "dicom" or Path(item).suffix.lower() == ".dcm":
            dicom = str(derived.derived_dicom(item, restored, out_dir / f"{stem}.restored.dcm", kind="restoration",
                                              method=method, description=f"low-dose restoration, dose {dose:g}"))
        checks = {"residual": {k: v for k, v in check.items() if k != "map"},
                  "noise_sd": float(np.sqrt(np.mean(level**2)))}
        downstream = _downstream(options.get("classifier"), observed, restored)
        if downstream:
            checks["downstream"] = downstream
        flagged = check["regions"]
        reason = ("restored; " + (f"{flagged} region(s) changed beyond the expected noise: compare with the input "
                                  "before reading" if flagged else "the removed signal looks like noise only"))
        pred = Prediction(**base, input=str(item), task="restoration", probabilities={},
                          calibrated_probabilities={}, calibration="none", prediction=None, uncertainty=None,
                          decision=Decision(decision="review" if flagged else "restored", reason=reason),
                          warnings=list(warnings),
                          synthetic=Synthetic(kind="restoration", method=method,
                                              banner=derived.banner_text("restoration", method), image=str(png),
                                              image_raw=str(raw), dicom=dicom, dose=dose,
                                              source_modality=dose_model.modality, target_modality=dose_model.modality,
                                              checks=checks))
        return pred.to_json_dict()

    return predict_each(inputs, one, base=base, task="restoration")


__all__ = ["DOSES", "evaluate", "predict", "restore_array", "score", "train"]


def report(folder: Path, package: dict[str, Any], data: str | None, *, out: Path, n_boot: int = 1000,
           split: str | None = None, examples: int = 3, example_dose: float | None = None,
           max_images: int | None = None) -> Path:
    """``meddx report MODEL DATA``: the HTML report of :func:`meddx.synthesis.report.write`."""
    import sys

    from meddx.synthesis.report import write

    return write(sys.modules[__name__], folder, package, data, out=out, n_boot=n_boot, split=split,
                 examples=examples, example_dose=example_dose, max_images=max_images)
