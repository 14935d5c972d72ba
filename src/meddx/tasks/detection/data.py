"""Detection data: Pascal VOC and COCO readers, box checks and splits.

A :class:`DetectionSet` is a list of :class:`Item` (image path, its size, boxes in pixels
``x0, y0, x1, y1`` and class indices, a group for group-aware splits) plus the class names.

Box policy (documented in ``docs/detection.md``):

* a box reaching past the image edge by at most :data:`CLIP_TOLERANCE` of the image side is
  clipped to the image (annotation tools often write ``xmax = width`` or one pixel more);
* a box wholly outside the image, further outside than that, or degenerate (zero or negative
  width or height, NaN) is an :class:`~meddx.exceptions.InvalidValueError` naming the file and box;
* an unknown class name is an :class:`~meddx.exceptions.InvalidValueError` when the classes are
  fixed (``classes=[...]``), otherwise the classes are the sorted names found;
* an empty or malformed annotation file is an ``EmptyDataError`` / ``CorruptFileError``;
* a missing image is a ``DataFileNotFoundError``.

``errors="skip"`` collects each bad file's error in ``DetectionSet.rejected`` instead of raising,
so one bad file never aborts a whole data set.
"""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from meddx.exceptions import (
    ConfigError,
    CorruptFileError,
    DataError,
    DataFileNotFoundError,
    EmptyDataError,
    InvalidValueError,
    MissingFieldError,
)

BCCD = "bccd-blood-cell-detection"
COVID_LUNGS = "covid-cxr-ieee8023-lungbbox"
BCCD_CLASSES = ["RBC", "WBC", "Platelets"]
LUNG_CLASSES = ["Right Lung", "Left Lung"]
CLIP_TOLERANCE = 0.05
"""A box may reach this share of the image side past an edge and is clipped; further out is an error."""
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")


@dataclass
class Item:
    """One annotated image."""

    path: Path
    width: int
    height: int
    boxes: np.ndarray  # (n, 4) float32, x0 y0 x1 y1 in pixels
    labels: np.ndarray  # (n,) int64 indices into the class names
    group: str = ""

    @property
    def name(self) -> str:
        return self.path.name


@dataclass
class DetectionSet:
    """Annotated images, their class names, and the files that could not be used."""

    items: list[Item]
    classes: list[str]
    source: str
    splits: dict[str, list[str]] | None = None  # the data set's own split (file names), when it has one
    rejected: list[tuple[str, str]] = field(default_factory=list)

    def subset(self, names: list[str] | set[str]) -> list[Item]:
        wanted = set(names)
        return [it for it in self.items if it.name in wanted]


def check_box(box: tuple[float, float, float, float], width: int, height: int, *, path: Path | str,
              field: str = "bndbox") -> tuple[float, float, float, float]:
    """``box`` clipped to the image, or an InvalidValueError when it cannot be used (see the module doc)."""
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise InvalidValueError(f"box {box} has a non-finite coordinate", path=path, field=field,
                                hint="Fix or delete this box in the annotation file")
    if x1 <= x0 or y1 <= y0:
        raise InvalidValueError(f"box {box} is degenerate (x1 <= x0 or y1 <= y0)", path=path, field=field,
                                hint="Boxes are x0, y0, x1, y1 with x1 > x0 and y1 > y0; fix or delete it")
    tx, ty = CLIP_TOLERANCE * width, CLIP_TOLERANCE * height
    if x0 < -tx or y0 < -ty or x1 > width + tx or y1 > height + ty:
        raise InvalidValueError(f"box {box} lies outside the {width}x{height} image", path=path, field=field,
                                hint=f"Boxes may reach at most {CLIP_TOLERANCE:.0%} past an edge (then they are "
                                "clipped); check the image size and the coordinate order x0, y0, x1, y1")
    cx0, cy0, cx1, cy1 = max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1)
    if cx1 - cx0 < 1.0 or cy1 - cy0 < 1.0:
        raise InvalidValueError(f"box {box} has less than one pixel inside the {width}x{height} image", path=path,
                                field=field, hint="Fix or delete this box in the annotation file")
    return cx0, cy0, cx1, cy1


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise DataFileNotFoundError("image not found", path=path,
                                    hint="Put the image next to its annotation (VOC: JPEGImages/<filename>)")
    try:
        with Image.open(path) as im:
            return int(im.width), int(im.height)
    except (OSError, UnidentifiedImageError) as exc:
        raise CorruptFileError(f"cannot read the image: {exc}", path=path) from exc


def _class_index(name: str, classes: list[str] | None, found: list[str], path: Path, field: str) -> int:
    if classes is None:
        if name not in found:
            found.append(name)
        return found.index(name)
    if name not in classes:
        raise InvalidValueError(f"unknown class {name!r}", path=path, field=field,
                                hint=f"Use one of {classes}, or train a new model on this data")
    return classes.index(name)


# --------------------------------------------------------------------------- VOC
def read_voc_xml(xml: Path, image_dir: Path, classes: list[str] | None, found: list[str] | None = None, *,
                 drop_degenerate: bool = False) -> Item:
    """One VOC annotation file as an :class:`Item` (boxes checked, image located); ``drop_degenerate``
    skips zero-size boxes instead of raising."""
    found = [] if found is None else found
    try:
        text = xml.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise DataFileNotFoundError(f"cannot read the annotation: {exc}", path=xml) from exc
    if not text.strip():
        raise EmptyDataError("the annotation file is empty", path=xml, hint="Write a VOC <annotation> or delete it")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise CorruptFileError(f"malformed VOC XML: {exc}", path=xml,
                               hint="Open it in an annotation tool and save it again") from exc
    if root.tag != "annotation":
        raise CorruptFileError(f"root element is <{root.tag}>, not <annotation>", path=xml)
    filename = (root.findtext("filename") or "").strip() or None
    image = image_dir / filename if filename else None
    if image is None or not image.is_file():
        for suffix in IMAGE_SUFFIXES:
            cand = image_dir / f"{xml.stem}{suffix}"
            if cand.is_file():
                image = cand
                break
    if image is None:
        raise MissingFieldError("no <filename> and no image named after the file", path=xml, field="filename")
    width, height = _image_size(image)
    boxes, labels = [], []
    for k, obj in enumerate(root.iter("object")):
        name = (obj.findtext("name") or "").strip()
        where = f"object[{k}]"
        if not name:
            raise MissingFieldError("object without <name>", path=xml, field=where)
        bb = obj.find("bndbox")
        if bb is None:
            raise MissingFieldError("object without <bndbox>", path=xml, field=f"{where}.bndbox")
        try:
            box = tuple(float(bb.findtext(t) or "nan") for t in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError as exc:
            raise CorruptFileError(f"bad <bndbox> value: {exc}", path=xml, field=f"{where}.bndbox") from exc
        if drop_degenerate and not (box[2] > box[0] and box[3] > box[1]):
            continue
        boxes.append(check_box(box, width, height, path=xml, field=f"{where}.bndbox"))  # type: ignore[arg-type]
        labels.append(_class_index(name, classes, found, xml, f"{where}.name"))
    return Item(image, width, height, np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64),
                group=image.stem)


def _voc_image_dir(folder: Path) -> Path:
    return folder / "JPEGImages" if (folder / "JPEGImages").is_dir() else folder


def read_voc(folder: str | Path, classes: list[str] | None = None, *, errors: str = "raise",
             drop_degenerate: bool = False) -> DetectionSet:
    """A VOC folder (``Annotations/*.xml``, ``JPEGImages/``, optional ``ImageSets/Main/*.txt``).

    ``drop_degenerate`` skips degenerate boxes instead of rejecting their file (used for BCCD,
    whose source holds a few zero-size boxes).
    """
    folder = Path(folder)
    ann = folder / "Annotations" if (folder / "Annotations").is_dir() else folder
    xmls = sorted(ann.glob("*.xml"))
    if not xmls:
        raise EmptyDataError("no VOC annotation files (*.xml)", path=ann,
                             hint="A VOC folder holds Annotations/*.xml and JPEGImages/")
    found: list[str] = list(classes) if classes else []
    fixed = list(classes) if classes else None
    items, rejected = [], []
    for xml in xmls:
        try:
            item = read_voc_xml(xml, _voc_image_dir(folder), fixed, found, drop_degenerate=drop_degenerate)
        except DataError as exc:
            if errors == "raise":
                raise
            rejected.append((xml.name, str(exc)))
            continue
        items.append(item)
    if not items:
        raise EmptyDataError("no usable annotated image", path=ann, hint=rejected[0][1] if rejected else None)
    names = fixed or found
    splits = None
    sets = folder / "ImageSets" / "Main"
    if sets.is_dir():
        by_stem = {it.path.stem: it.name for it in items}
        splits = {}
        for part in ("train", "val", "test"):
            f = sets / f"{part}.txt"
            if f.is_file():
                splits[part] = [by_stem[s] for s in f.read_text().split() if s in by_stem]
    return DetectionSet(items, names, str(folder), splits, rejected)


# --------------------------------------------------------------------------- COCO
def read_coco(json_path: str | Path, image_dir: str | Path | None = None, classes: list[str] | None = None, *,
              errors: str = "raise") -> DetectionSet:
    """A COCO detection file (``images``, ``annotations`` with ``bbox`` = x, y, w, h, ``categories``).

    The group of an image is ``images[i].metadata.patientid`` or ``patient_id`` when present
    (so splits keep a patient's images together), else its file name.
    """
    json_path = Path(json_path)
    if not json_path.is_file():
        raise DataFileNotFoundError("COCO annotation file not found", path=json_path)
    text = json_path.read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        raise EmptyDataError("the annotation file is empty", path=json_path)
    try:
        coco = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CorruptFileError(f"malformed COCO JSON: {exc}", path=json_path) from exc
    if not isinstance(coco, dict):
        raise CorruptFileError("COCO file does not hold a JSON object", path=json_path)
    for key in ("images", "annotations", "categories"):
        if key not in coco:
            raise MissingFieldError(f"COCO file has no {key!r}", path=json_path, field=key,
                                    hint="A COCO detection file has images, annotations and categories")
    if not coco["images"]:
        raise EmptyDataError("COCO file lists no images", path=json_path, field="images")
    image_dir = Path(image_dir) if image_dir else json_path.parent
    cats = {c["id"]: str(c["name"]) for c in coco["categories"]}
    found: list[str] = list(classes) if classes else [cats[k] for k in sorted(cats)]
    fixed = list(classes) if classes else None
    per_image: dict[int, list[dict]] = {}
    for k, a in enumerate(coco["annotations"]):
        per_image.setdefault(a.get("image_id"), []).append({**a, "_k": k})
    items, rejected = [], []
    for img in coco["images"]:
        name = str(img.get("file_name", ""))
        try:
            path = image_dir / name
            width, height = _image_size(path)
            boxes, labels = [], []
            for a in per_image.get(img.get("id"), []):
                where = f"annotations[{a['_k']}]"
                if a.get("category_id") is None:
                    continue  # an unlabelled box (the COVID set has one): nothing to learn from
                if a.get("category_id") not in cats:
                    raise InvalidValueError(f"unknown category_id {a.get('category_id')!r}", path=json_path,
                                            field=f"{where}.category_id", hint=f"Declare it in categories ({cats})")
                if "bbox" not in a or len(a["bbox"]) != 4:
                    raise MissingFieldError("annotation without a 4-value bbox", path=json_path, field=f"{where}.bbox")
                x, y, w, h = (float(v) for v in a["bbox"])
                boxes.append(check_box((x, y, x + w, y + h), width, height, path=json_path, field=f"{where}.bbox"))
                labels.append(_class_index(cats[a["category_id"]], fixed, found, json_path, f"{where}.category_id"))
            meta = img.get("metadata") or {}
            group = str(meta.get("patientid") or img.get("patient_id") or img.get("patientid") or name)
        except DataError as exc:
            if errors == "raise":
                raise
            rejected.append((name, str(exc)))
            continue
        items.append(Item(path, width, height, np.asarray(boxes, np.float32).reshape(-1, 4),
                          np.asarray(labels, np.int64), group=group))
    if not items:
        raise EmptyDataError("no usable annotated image", path=json_path, hint=rejected[0][1] if rejected else None)
    return DetectionSet(items, fixed or found, str(json_path), None, rejected)


# --------------------------------------------------------------------------- entry points
def load_detection_data(data: str, *, errors: str = "raise") -> DetectionSet:
    """``bccd-blood-cell-detection``, ``covid-cxr-ieee8023-lungbbox``, a VOC folder, a COCO folder
    (one ``*.json`` with images next to it or in ``images/``) or a COCO ``.json`` file."""
    if data == BCCD:
        from meddx.data.catalogue import fetch

        return read_voc(fetch(BCCD), BCCD_CLASSES, errors=errors, drop_degenerate=True)
    if data == COVID_LUNGS:
        from meddx.data.catalogue import fetch

        folder = fetch(COVID_LUNGS)
        return read_coco(folder / "annotations_coco_max384.json", folder / "images_max384", LUNG_CLASSES,
                         errors=errors)
    path = Path(data)
    if path.is_file() and path.suffix.lower() == ".json":
        return read_coco(path, errors=errors)
    if not path.is_dir():
        raise ConfigError(f"unknown detection data {data!r}", field="data",
                          hint=f"Pass {BCCD!r}, {COVID_LUNGS!r}, a VOC folder (Annotations/, JPEGImages/) or "
                          "a COCO folder (one .json and its images)")
    if (path / "Annotations").is_dir() or any(path.glob("*.xml")):
        return read_voc(path, errors=errors)
    jsons = sorted(path.glob("*.json"))
    if len(jsons) == 1:
        images = path / "images" if (path / "images").is_dir() else path
        return read_coco(jsons[0], images, errors=errors)
    raise EmptyDataError("neither a VOC nor a COCO folder", path=path,
                         hint="Use Annotations/*.xml + JPEGImages/ (VOC) or exactly one COCO .json with its images")


def split_items(ds: DetectionSet, seed: int = 0, val: float = 0.15, test: float = 0.2) -> dict[str, list[str]]:
    """The data set's own split when it has train/val/test, else a seeded group-aware split by ``Item.group``."""
    if ds.splits and all(ds.splits.get(k) for k in ("train", "val", "test")):
        return {k: list(ds.splits[k]) for k in ("train", "val", "test")}
    groups = sorted({it.group for it in ds.items})
    if len(groups) < 3:
        raise InvalidValueError(f"need at least 3 images (groups) to split, got {len(groups)}", field="data")
    rng = np.random.default_rng(seed)
    order = [groups[i] for i in rng.permutation(len(groups))]
    n_test = max(1, int(round(test * len(order))))
    n_val = max(1, int(round(val * len(order))))
    part = {g: "test" for g in order[:n_test]}
    part.update({g: "val" for g in order[n_test:n_test + n_val]})
    out: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for it in ds.items:
        out[part.get(it.group, "train")].append(it.name)
    return out


def looks_like_detection(data: str) -> bool:
    """True for a VOC folder (``Annotations/*.xml``) or a COCO detection file / folder: the ``accepts``
    test :mod:`meddx.modalities` can use to route a folder to this task. Reads at most one JSON file."""
    path = Path(data)
    if path.is_dir():
        if (path / "Annotations").is_dir() and any((path / "Annotations").glob("*.xml")):
            return True
        jsons = sorted(path.glob("*.json"))
        if len(jsons) != 1:
            return False
        path = jsons[0]
    if not (path.is_file() and path.suffix.lower() == ".json"):
        return False
    try:
        doc = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(doc, dict) and {"images", "annotations", "categories"} <= set(doc) and any(
        "bbox" in a for a in doc.get("annotations") or [])
