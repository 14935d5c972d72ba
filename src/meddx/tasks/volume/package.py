"""The (volume, segmentation) handler: ``meddx train/evaluate/predict`` for 3-D segmenters.

A 3-D model reads what the data layer reads as a volume (a NIfTI file, a DICOM series
folder) and writes a label volume: NIfTI with the source's affine, plus a DICOM SEG on
the source slices when the input was a DICOM series. The training sources are:

* ``phantom-volumes`` (or ``phantom-volumes:N``): generated ellipsoid lesions in noisy
  volumes with exact masks (:mod:`meddx.tasks.volume.phantoms`): meddx's own check that
  the 3-D path learns; no clinical claim;
* a folder of NIfTI pairs ``<name>.nii[.gz]`` + ``<name>_mask.nii[.gz]`` of one shape.

Volumes too large for the 3-D network run slice by slice (:func:`predict_volume`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from meddx.exceptions import ConfigError, DataFileNotFoundError, EmptyDataError, LabelShapeError, MeddxError

PHANTOMS = "phantom-volumes"
WEIGHTS_FILE = "model.safetensors"
SHAPE = (24, 24, 24)
OPTIONS = {"lr": 1e-2, "batch_size": 4, "n": 48, "time_limit_s": None}


def is_source(data: str) -> bool:
    """``phantom-volumes[:N]``, or a folder holding ``*_mask.nii[.gz]`` label volumes."""
    if data == PHANTOMS or data.startswith(PHANTOMS + ":"):
        return True
    path = Path(data)
    return path.is_dir() and any(path.glob("*_mask.nii*"))


def _mask_name(path: Path) -> Path:
    stem = path.name[: -len(".nii.gz")] if path.name.endswith(".nii.gz") else path.stem
    return path.with_name(f"{stem}_mask{''.join(path.suffixes[-2:]) if path.name.endswith('.nii.gz') else '.nii'}")


def _load(data: str, *, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(volumes (n, 1, D, H, W), masks (n, 1, D, H, W), names)`` from phantoms or a NIfTI folder."""
    if data.startswith(PHANTOMS):
        from meddx.tasks.volume.phantoms import phantom_dataset

        count = int(data.split(":", 1)[1]) if ":" in data else n
        volumes, masks, _ = phantom_dataset(count, SHAPE, seed=seed)
        return volumes, masks, [f"phantom{seed}-{i:03d}" for i in range(count)]
    from meddx.data import read

    folder = Path(data)
    images = sorted(p for p in folder.glob("*.nii*") if "_mask." not in p.name)
    if not images:
        raise EmptyDataError("no NIfTI volumes in the folder", path=folder, field="volumes",
                             hint="Put <name>.nii.gz beside <name>_mask.nii.gz")
    volumes, masks = [], []
    for image in images:
        mask_path = _mask_name(image)
        if not mask_path.is_file():
            raise DataFileNotFoundError(f"{image.name} has no mask", path=mask_path, field="mask",
                                        hint=f"Add {mask_path.name} (0 = background, 1 = lesion)")
        volume, mask = read(image).array, read(mask_path).array
        if volume.shape != mask.shape or volume.shape != read(images[0]).array.shape:
            raise LabelShapeError(f"volume {volume.shape}, mask {mask.shape}, first volume "
                                  f"{read(images[0]).array.shape}", path=mask_path, field="shape",
                                  hint="Resample every pair to one grid before training")
        volumes.append(np.asarray(volume, dtype=np.float32)[None])
        masks.append((np.asarray(mask) > 0).astype(np.uint8)[None])
    return np.stack(volumes), np.stack(masks), [p.name for p in images]


def _run_folder(out: Path | None) -> Path:
    from meddx.config import home_dir

    folder = Path(out) if out else home_dir() / "runs" / f"volume-seg-{time.strftime('%Y%m%d-%H%M%S')}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _dice_ci(dices: list[float], *, n_boot: int, seed: int) -> dict[str, float]:
    values = np.asarray(dices, dtype=float)
    rng = np.random.default_rng(seed)
    boots = [values[rng.integers(0, len(values), len(values))].mean() for _ in range(n_boot)]
    return {"value": float(values.mean()), "low": float(np.percentile(boots, 2.5)),
            "high": float(np.percentile(boots, 97.5))}


def train(data: str, *, model: str | None = None, seed: int = 0, epochs: int | None = None, out: Path | None = None,
          progress: bool = True, **options: Any) -> Path:
    """Train a 3-D UNet (MONAI) on ``data``; hold out a fifth of the volumes as the test split."""
    from safetensors.torch import save_file

    from meddx.packaging.registry import write_package
    from meddx.tasks.volume.training import dice, fit_segmenter, predict_mask

    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ConfigError(f"--{unknown[0].replace('_', '-')} does not apply to 3-D segmenters", field=unknown[0],
                          hint=f"Options: {', '.join(sorted(OPTIONS))}")
    if model not in (None, "unet3d"):
        raise ConfigError(f"unknown 3-D model {model!r}", field="model", hint="Use unet3d (the default)")
    settings = {**OPTIONS, **options}
    start = time.perf_counter()
    volumes, masks, names = _load(data, n=int(settings["n"]), seed=seed)
    order = np.random.default_rng(seed).permutation(len(volumes))
    n_test = max(1, len(order) // 5)
    test, fit = order[:n_test], order[n_test:]
    if len(fit) < 2:
        raise EmptyDataError(f"{len(volumes)} volumes leave {len(fit)} to train on", field="volumes",
                             hint="Give at least 3 volumes")
    net = fit_segmenter(volumes[fit], masks[fit], epochs=epochs or 30, lr=float(settings["lr"]),
                        batch_size=int(settings["batch_size"]), seed=seed, time_limit_s=settings["time_limit_s"])
    predicted = predict_mask(net, volumes[test])
    dices = [dice(p, m[0]) for p, m in zip(predicted, masks[test], strict=True)]
    folder = _run_folder(out)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(folder / WEIGHTS_FILE))
    package = {
        "name": "volume-unet3d", "version": time.strftime("%Y%m%d.%H%M%S"), "modality": "volume",
        "task": "segmentation", "architecture": "unet3d", "class_names": ["background", "lesion"],
        "data": {"source": data, "synthetic": data.startswith(PHANTOMS)},
        "splits": {"train": [names[i] for i in fit], "test": [names[i] for i in test]},
        "preprocess": {"normalise": "per-volume z-score", "input_shape": list(volumes.shape[2:])},
        "metrics": {"dice": _dice_ci(dices, n_boot=1000, seed=seed)}, "seed": seed,
        "train_seconds": round(time.perf_counter() - start, 1),
        "intended_use": "Research check of the 3-D path; trained on " + (
            "synthetic phantoms: no clinical use" if data.startswith(PHANTOMS) else data),
    }
    write_package(folder, package)
    return folder


def _network(folder: Path) -> Any:
    from safetensors.torch import load_file

    from meddx.tasks.volume.networks import segmenter_3d

    net = segmenter_3d(2)
    net.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    return net.eval()


def evaluate(folder: Path, package: dict[str, Any], data: str, *, split: str | None = None, n_boot: int = 1000,
             out: Path | None = None, seed: int = 0, positive: str | None = None) -> dict[str, Any]:
    """Dice per volume with a bootstrap CI: the package's test split of ``data`` unless ``split='all'``."""
    from meddx.tasks.volume.inference import predict_volume
    from meddx.tasks.volume.training import dice

    train_seed = int(package.get("seed", 0))
    volumes, masks, names = _load(data, n=int(OPTIONS["n"]), seed=train_seed)
    chosen = split or "test"
    if chosen == "test" and data == (package.get("data") or {}).get("source"):
        keep = set(package["splits"]["test"])
        rows = [i for i, name in enumerate(names) if name in keep]
    elif chosen in ("test", "all"):
        rows = list(range(len(names)))  # another source: nothing of it was seen in training
    else:
        raise ConfigError(f"unknown split {chosen!r}", field="split", hint="Use test or all")
    net = _network(folder)
    dices = [dice(predict_volume(net, volumes[i, 0])[0], masks[i, 0]) for i in rows]
    return {"model": package["name"], "version": package["version"], "n": len(rows), "split": chosen,
            "task": "segmentation", "metrics": {"dice": _dice_ci(dices, n_boot=n_boot, seed=seed)},
            "per_volume": [{"volume": names[i], "dice": d} for i, d in zip(rows, dices, strict=True)]}


def _write_nifti(mask: np.ndarray, affine: np.ndarray | None, path: Path) -> Path:
    import nibabel as nib

    nib.save(nib.Nifti1Image(mask.astype(np.uint8), affine if affine is not None else np.eye(4)), str(path))
    return path


def predict(folder: Path, package: dict[str, Any], inputs: list[str], **options: Any) -> list[dict[str, Any]]:
    """A label volume per NIfTI file or DICOM series folder (a DICOM SEG too for a series)."""
    from meddx.inference.schema import Decision, Mask, Prediction
    from meddx.tasks.volume.inference import load_volume, predict_volume

    out_dir = Path(options.get("out_dir") or options.get("explain_dir") or ".")
    out_dir.mkdir(parents=True, exist_ok=True)
    net = _network(folder)
    classes = list(package["class_names"])
    results = []
    for item in inputs:
        base = {"input": str(item), "modality": "volume", "model": package["name"],
                "model_version": str(package["version"]), "class_names": classes}
        try:
            volume = load_volume(item)
            mask, prob, mode = predict_volume(net, volume)
        except MeddxError as exc:
            results.append(Prediction.rejected(reasons=[str(exc)], **base).model_copy(
                update={"task": "segmentation"}).to_json_dict())
            continue
        stem = Path(item).name.split(".")[0] or "volume"
        files = volume.meta.get("files") or []
        lesion = float((mask > 0).mean())
        seg = None
        if files:
            from meddx.outputs import write_seg

            seg = str(write_seg([Path(f) for f in files], mask, classes=classes[1:], out=out_dir / f"{stem}_seg.dcm",
                                algorithm=package["name"], version=str(package["version"])))
        nifti = _write_nifti(mask, volume.affine, out_dir / f"{stem}_mask.nii.gz")
        p_lesion = float(prob[1].max())
        prediction = Prediction(
            **base, task="segmentation", probabilities={"lesion present": p_lesion},
            calibrated_probabilities={}, calibration="none",
            prediction="lesion present" if lesion > 0 else "no lesion", uncertainty=None,
            decision=Decision(decision="positive" if lesion > 0 else "negative",
                              reason=f"{lesion:.2%} of voxels labelled lesion ({mode} inference)"),
            mask=Mask(classes=classes, shape=list(mask.shape), mask=str(nifti),
                      fraction={c: float((mask == k).mean()) for k, c in enumerate(classes)}, dicom_seg=seg),
            intended_use=package.get("intended_use"),
            warnings=["trained on synthetic phantoms: no clinical use"] if (package.get("data") or {}).get(
                "synthetic") else [],
        )
        results.append(prediction.to_json_dict())
    return results


__all__ = ["PHANTOMS", "evaluate", "is_source", "predict", "train"]
