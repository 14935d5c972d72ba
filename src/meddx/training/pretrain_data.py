"""Pretraining tasks: small labelled image sets cut from the catalogue's medical images.

Each task loader returns a :class:`TaskData`: grey uint8 images ``(N, size, size)``,
int64 labels, class names, and one group id per image (patient, source image or
child), so that a hold-out never shares a patient with training. Every task is
capped (``cap``) with a class-balanced draw, and only the images the draw picked
are decoded, which keeps loading to seconds on a laptop.

Tasks (see ``docs/pretraining.md``):

``pneumoniamnist``
    PneumoniaMNIST, **train split only**: normal vs pneumonia (paediatric chest X-ray).
``covid-finding``
    ieee8023 COVID-19 chest X-rays (``images_max384``), ``finding`` from
    ``metadata.csv`` joined on ``orig_file_name``: COVID-19 (incl. "COVID-19, ARDS")
    vs any other finding; "todo", "Unknown" and missing findings are dropped.
``covid-lung-side``
    Crops of the COCO lung boxes of the same X-rays: right vs left lung.
``bccd-cells``
    Crops of the BCCD Pascal VOC boxes: RBC, WBC, platelets.
``chase-vessels``
    Patches of the CHASE_DB1 fundus images (green channel, contrast stretched per
    image inside the field of view): the centre pixel is a
    vessel (first observer's mask) vs background at least 3 px from any vessel,
    inside the field of view.

The two benchmark targets, BreastMNIST and brain-tumor-mri-navoneel, are never
used: :data:`PRETRAIN_TARGETS`, checked by :func:`load_task`.
"""

from __future__ import annotations

import hashlib
import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from meddx.exceptions import ConfigError, CorruptFileError, EmptyDataError, MissingFieldError

PRETRAIN_TARGETS: tuple[str, ...] = ("breastmnist", "brain-tumor-mri-navoneel")
"""Data sets kept out of pretraining: the transfer-learning benchmark's targets."""

CHASE_PATCH = 48
"""Side, in fundus pixels, of a CHASE_DB1 patch before it is resized to ``size``."""


@dataclass
class TaskData:
    """One pretraining task, ready to train on.

    Attributes:
        name: task name (a key of :data:`TASKS`).
        dataset: the catalogue data set it comes from.
        images: uint8 ``(N, size, size)`` grey images.
        labels: int64 ``(N,)`` indices into ``class_names``.
        class_names: label names in index order.
        groups: ``(N,)`` str: patient / source image / child, for group-wise hold-out.
        licence: the data set's licence, from the catalogue.
        flip: whether flips keep the label (False for chest X-rays: left/right matters).
    """

    name: str
    dataset: str
    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    groups: np.ndarray
    licence: str
    flip: bool

    def counts(self) -> dict[str, int]:
        """Images per class name."""
        found = np.bincount(self.labels, minlength=len(self.class_names))
        return {name: int(n) for name, n in zip(self.class_names, found, strict=True)}


Loaded = tuple[np.ndarray, np.ndarray, list[str], np.ndarray]
Loader = Callable[[Path, int, "int | None", np.random.Generator], Loaded]


@dataclass(frozen=True)
class TaskSpec:
    """A registered task: its source data set, loader and whether flips are allowed."""

    name: str
    dataset: str
    loader: Loader
    flip: bool
    description: str


# --------------------------------------------------------------------------- helpers


def balanced_cap(labels: np.ndarray, cap: int | None, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of at most ``cap`` samples: up to ``cap // K`` per class, the rest filled at random.

    Rare classes are kept whole; the common class fills what they leave.
    """
    labels = np.asarray(labels)
    if cap is None or len(labels) <= cap:
        return np.arange(len(labels))
    classes = np.unique(labels)
    share = cap // len(classes)
    chosen: list[np.ndarray] = []
    rest: list[np.ndarray] = []
    for c in classes:
        members = rng.permutation(np.flatnonzero(labels == c))
        chosen.append(members[:share])
        rest.append(members[share:])
    picked = np.concatenate(chosen)
    leftover = rng.permutation(np.concatenate(rest))
    picked = np.concatenate([picked, leftover[: cap - len(picked)]])
    return np.sort(picked)


def holdout_mask(groups: np.ndarray, fraction: float, salt: str) -> np.ndarray:
    """True for samples whose group is held out: a stable hash of ``salt:group`` below ``fraction``.

    The hash does not depend on the cap or the seed, so the held-out patients of
    a data set are the same for every task cut from it (no patient is in training
    for one task and held out for another). At least one group is held out when
    there are two or more.
    """
    groups = np.asarray(groups).astype(str)
    unique = np.unique(groups)
    score = {g: int(hashlib.sha256(f"{salt}:{g}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF for g in unique}
    held = {g for g in unique if score[g] < fraction}
    if fraction > 0 and not held and len(unique) >= 2:
        held = {min(unique, key=lambda g: score[g])}
    return np.array([g in held for g in groups], dtype=bool)


def _square(image: Any, size: int) -> np.ndarray:
    """A PIL image → grey uint8 ``(size, size)``: centre crop to a square, then resize (bilinear)."""
    from PIL import Image

    grey = image.convert("L")
    w, h = grey.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    grey = grey.crop((left, top, left + side, top + side))
    return np.asarray(grey.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def _box_crop(
    image: Any, box: tuple[float, float, float, float], size: int, margin: float = 0.1, *, square: bool = True
) -> np.ndarray:
    """A crop around ``box`` (x0, y0, x1, y1) plus ``margin``, resized to ``size``².

    ``square=True`` crops a square around the box's centre, kept inside the
    image (cells: keeps their shape); ``square=False`` crops the box itself
    and stretches it (lungs: a tall box, whose square would hold both lungs).
    """
    from PIL import Image

    w, h = image.size
    x0, y0, x1, y1 = box
    if not square:
        mx, my = (x1 - x0) * margin, (y1 - y0) * margin
        region = (max(0, round(x0 - mx)), max(0, round(y0 - my)), min(w, round(x1 + mx)), min(h, round(y1 + my)))
        if region[2] - region[0] < 2 or region[3] - region[1] < 2:
            region = (0, 0, w, h)
        crop = image.crop(region).convert("L")
        return np.asarray(crop.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = min(max(x1 - x0, y1 - y0, 4.0) * (1 + 2 * margin), float(min(w, h)))
    left = min(max(cx - side / 2, 0.0), w - side)
    top = min(max(cy - side / 2, 0.0), h - side)
    crop = image.crop((round(left), round(top), round(left + side), round(top + side)))
    return np.asarray(crop.convert("L").resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def _open(path: Path) -> Any:
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(path)
        image.load()
    except (OSError, UnidentifiedImageError) as exc:
        raise CorruptFileError(f"cannot decode image: {exc}", path=path, hint="Fetch the data set again") from exc
    return image


def _stack(images: list[np.ndarray], size: int) -> np.ndarray:
    return np.stack(images).astype(np.uint8) if images else np.zeros((0, size, size), np.uint8)


# --------------------------------------------------------------------------- loaders


def load_pneumoniamnist(folder: Path, size: int, cap: int | None, rng: np.random.Generator) -> Loaded:
    """PneumoniaMNIST train split: normal (0) vs pneumonia (1); val/test are never read into training."""
    from PIL import Image

    from meddx.data import read
    from meddx.data.catalogue import resolve_file

    path = resolve_file(folder, "*mnist*.npz")
    sample = read(path, reader="npz")
    if "train" not in sample.splits:
        raise MissingFieldError("no train split", path=path, field="train_images", hint="Fetch the data set again")
    images, labels = sample.splits["train"]
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    keep = balanced_cap(labels, cap, rng)
    out = []
    for i in keep:
        img = np.asarray(images[i], dtype=np.uint8)
        if img.ndim == 3:
            img = img.mean(axis=-1).astype(np.uint8)
        if img.shape != (size, size):
            img = np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)
        out.append(img)
    groups = np.array([f"train-{i}" for i in keep])  # no patient ids in MedMNIST: one group per image
    return _stack(out, size), labels[keep], ["normal", "pneumonia"], groups


def _covid_table(folder: Path) -> tuple[Any, dict[str, Any]]:
    """COCO images joined to ``metadata.csv`` (README recipe), and the COCO dict."""
    import pandas as pd

    coco_path = folder / "annotations_coco_max384.json"
    try:
        coco = json.loads(coco_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CorruptFileError(f"cannot read COCO annotations: {exc}", path=coco_path) from exc
    for key in ("images", "annotations"):
        if key not in coco:
            raise MissingFieldError(f"COCO file has no {key!r}", path=coco_path, field=key)
    meta = pd.read_csv(folder / "metadata.csv", usecols=["patientid", "finding", "filename"])
    images = pd.DataFrame(coco["images"]).merge(meta, left_on="orig_file_name", right_on="filename", how="left")
    images["group"] = images["patientid"].astype(str).where(images["patientid"].notna(), "file:" + images["file_name"])
    return images, coco


def load_covid_finding(folder: Path, size: int, cap: int | None, rng: np.random.Generator) -> Loaded:
    """Whole X-rays: other finding (0) vs COVID-19 (1); unknown findings dropped; groups = patientid."""
    images, _ = _covid_table(folder)
    finding = images["finding"].fillna("").astype(str).str.strip()
    known = ~finding.isin({"", "todo", "Unknown"})
    images, finding = images[known].reset_index(drop=True), finding[known].reset_index(drop=True)
    labels = finding.str.startswith("COVID-19").to_numpy().astype(np.int64)
    keep = balanced_cap(labels, cap, rng)
    out = [_square(_open(folder / "images_max384" / images.at[i, "file_name"]), size) for i in keep]
    return _stack(out, size), labels[keep], ["other", "COVID-19"], images["group"].to_numpy()[keep].astype(str)


def load_covid_lung_side(folder: Path, size: int, cap: int | None, rng: np.random.Generator) -> Loaded:
    """Crops of the COCO lung boxes: right lung (0) vs left lung (1); groups = patientid."""
    images, coco = _covid_table(folder)
    by_id = images.set_index("id")
    names = {c["id"]: c["name"] for c in coco.get("categories", [])}
    classes = ["Right Lung", "Left Lung"]
    rows = [a for a in coco["annotations"]  # one box in the source has no category: skipped
            if names.get(a.get("category_id")) in classes and a.get("image_id") in by_id.index and "bbox" in a]
    labels = np.array([classes.index(names[a["category_id"]]) for a in rows], dtype=np.int64)
    keep = balanced_cap(labels, cap, rng)
    out, groups, cache = [], [], {}
    for i in keep:
        ann = rows[i]
        record = by_id.loc[ann["image_id"]]
        if ann["image_id"] not in cache:
            cache = {ann["image_id"]: _open(folder / "images_max384" / record["file_name"])}
        x, y, w, h = ann["bbox"]
        out.append(_box_crop(cache[ann["image_id"]], (x, y, x + w, y + h), size, margin=0.05, square=False))
        groups.append(str(record["group"]))
    return _stack(out, size), labels[keep], ["right lung", "left lung"], np.array(groups, dtype=str)


BCCD_CLASSES = ["RBC", "WBC", "Platelets"]


def load_bccd_cells(folder: Path, size: int, cap: int | None, rng: np.random.Generator) -> Loaded:
    """Crops of the BCCD VOC boxes: RBC (0), WBC (1), Platelets (2); groups = source image.

    The images of BCCD's own test split (``ImageSets/Main/test.txt``) are left out, so a backbone
    pretrained here can start a detector that is scored on them.
    """
    boxes: list[tuple[str, tuple[float, float, float, float]]] = []
    labels: list[int] = []
    test_list = folder / "ImageSets" / "Main" / "test.txt"
    held_out = set(test_list.read_text(encoding="utf-8").split()) if test_list.is_file() else set()
    for xml in sorted((folder / "Annotations").glob("*.xml")):
        if xml.stem in held_out:
            continue
        try:
            root = ET.parse(xml).getroot()
        except ET.ParseError as exc:
            raise CorruptFileError(f"bad VOC XML: {exc}", path=xml) from exc
        stem = xml.stem
        for obj in root.iter("object"):
            name = (obj.findtext("name") or "").strip()
            bb = obj.find("bndbox")
            if name not in BCCD_CLASSES or bb is None:
                continue
            try:
                box = tuple(float(bb.findtext(k) or "nan") for k in ("xmin", "ymin", "xmax", "ymax"))
            except ValueError as exc:
                raise CorruptFileError(f"bad bndbox: {exc}", path=xml, field="bndbox") from exc
            if not all(math.isfinite(v) for v in box) or box[2] <= box[0] or box[3] <= box[1]:
                continue  # the source has a few degenerate boxes
            boxes.append((stem, box))  # type: ignore[arg-type]
            labels.append(BCCD_CLASSES.index(name))
    if not boxes:
        raise EmptyDataError("no RBC/WBC/Platelets boxes", path=folder / "Annotations")
    y = np.array(labels, dtype=np.int64)
    keep = balanced_cap(y, cap, rng)
    keep = keep[np.argsort([boxes[i][0] for i in keep], kind="stable")]  # decode each image once
    out, cache = [], {}
    for i in keep:
        stem, box = boxes[i]
        if stem not in cache:
            cache = {stem: _open(folder / "JPEGImages" / f"{stem}.jpg")}
        out.append(_box_crop(cache[stem], box, size, margin=0.1))
    return _stack(out, size), y[keep], list(BCCD_CLASSES), np.array([boxes[i][0] for i in keep], dtype=str)


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by a (2r+1)² square, separable, in numpy."""
    out = mask.copy()
    for axis in (0, 1):
        grown = out.copy()
        for shift in range(1, radius + 1):
            grown |= np.roll(out, shift, axis=axis) | np.roll(out, -shift, axis=axis)
        out = grown
    return out


def load_chase_vessels(folder: Path, size: int, cap: int | None, rng: np.random.Generator) -> Loaded:
    """Green-channel fundus patches: background (0) vs vessel centre (1); groups = child (both eyes)."""
    from PIL import Image

    files = sorted(folder.glob("Image_*[LR].jpg"))
    if not files:
        raise EmptyDataError("no Image_XX{L,R}.jpg fundus images", path=folder)
    per_image = 400 if cap is None else max(1, math.ceil(cap / (2 * len(files))))
    half = CHASE_PATCH // 2
    out, labels, groups = [], [], []
    for path in files:
        mask_path = path.with_name(f"{path.stem}_1stHO.png")
        if not mask_path.is_file():
            raise MissingFieldError("vessel mask missing", path=mask_path, field="1stHO")
        rgb = np.asarray(_open(path).convert("RGB"))
        vessel = np.asarray(_open(mask_path).convert("1"), dtype=bool)
        if vessel.shape != rgb.shape[:2]:
            raise CorruptFileError("mask and image differ in size", path=mask_path, field="shape")
        fov = rgb[..., 0] > 20  # the field of view is bright in red; the border is black
        green = rgb[..., 1]  # the channel with the best vessel contrast
        low, high = np.percentile(green[fov][::9], [1, 99]) if fov.any() else (0.0, 255.0)
        lut = np.clip((np.arange(256) - low) / max(high - low, 1.0) * 255.0, 0, 255).astype(np.uint8)
        green = lut[green]  # per-image contrast stretch
        inner = np.zeros_like(fov)
        inner[half:-half, half:-half] = True
        candidates = {1: vessel & fov & inner, 0: ~_dilate(vessel, 3) & fov & inner}
        for label, where in candidates.items():
            ys, xs = np.nonzero(where)
            if len(ys) == 0:
                continue
            pick = rng.choice(len(ys), size=min(per_image, len(ys)), replace=False)
            for j in pick:
                y0, x0 = ys[j] - half, xs[j] - half
                patch = Image.fromarray(green[y0:y0 + CHASE_PATCH, x0:x0 + CHASE_PATCH])
                out.append(np.asarray(patch.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8))
                labels.append(label)
                groups.append(path.stem[:-1])  # Image_01L / Image_01R -> one child
    y = np.array(labels, dtype=np.int64)
    keep = balanced_cap(y, cap, rng)
    images = _stack(out, size)
    return images[keep], y[keep], ["background", "vessel"], np.array(groups, dtype=str)[keep]


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec("pneumoniamnist", "pneumoniamnist", load_pneumoniamnist, False,
                 "paediatric chest X-ray, normal vs pneumonia (train split only)"),
        TaskSpec("covid-finding", "covid-cxr-ieee8023-lungbbox", load_covid_finding, False,
                 "adult chest X-ray, COVID-19 vs other finding"),
        TaskSpec("covid-lung-side", "covid-cxr-ieee8023-lungbbox", load_covid_lung_side, False,
                 "chest X-ray lung-box crops, right vs left lung"),
        TaskSpec("bccd-cells", "bccd-blood-cell-detection", load_bccd_cells, True,
                 "blood smear cell crops, RBC / WBC / platelets"),
        TaskSpec("chase-vessels", "chase-db1-retina-vessel-seg", load_chase_vessels, True,
                 "retinal fundus patches, vessel centre vs background"),
    )
}
DEFAULT_TASKS: tuple[str, ...] = tuple(TASKS)


def load_task(
    name: str,
    *,
    size: int = 64,
    cap: int | None = 3000,
    seed: int = 0,
    exclude: tuple[str, ...] | list[str] = PRETRAIN_TARGETS,
) -> TaskData:
    """Fetch the data set of task ``name`` and build its images at ``size`` px, at most ``cap`` of them."""
    from meddx.data.catalogue import fetch, get_dataset

    if name not in TASKS:
        import difflib

        close = difflib.get_close_matches(name, list(TASKS), n=3)
        target = " (a transfer-learning target, never used for pretraining)" if name in PRETRAIN_TARGETS else ""
        raise ConfigError(
            f"unknown pretraining task {name!r}{target}", field="tasks",
            hint=(f"Did you mean {', '.join(close)}? " if close else "") + f"Known: {', '.join(TASKS)}",
        )
    spec = TASKS[name]
    if spec.dataset in exclude:
        raise ConfigError(
            f"task {name!r} uses {spec.dataset}, which is excluded from pretraining", field="tasks",
            hint="Drop the task, or remove the data set from --exclude if it is not a benchmark target",
        )
    if size < 8:
        raise ConfigError(f"size must be at least 8 px, not {size}", field="size")
    if cap is not None and cap < 2:
        raise ConfigError(f"max_per_task must be at least 2, not {cap}", field="max_per_task")
    folder = fetch(spec.dataset)
    rng = np.random.default_rng([seed, *name.encode()])
    images, labels, class_names, groups = spec.loader(folder, size, cap, rng)
    if len(labels) == 0:
        raise EmptyDataError(f"task {name!r} produced no images", path=folder, field="tasks")
    return TaskData(
        name=name, dataset=spec.dataset, images=images, labels=labels.astype(np.int64),
        class_names=class_names, groups=np.asarray(groups).astype(str),
        licence=get_dataset(spec.dataset).licence, flip=spec.flip,
    )


__all__ = [
    "DEFAULT_TASKS",
    "PRETRAIN_TARGETS",
    "TASKS",
    "TaskData",
    "TaskSpec",
    "balanced_cap",
    "holdout_mask",
    "load_task",
]
