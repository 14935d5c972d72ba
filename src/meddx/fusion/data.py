"""Image + clinical data for fusion: the covid-cxr-ieee8023-lungbbox set or a ``clinical.csv`` folder.

Every image is kept (none is dropped silently): a row whose target is unknown gets
label ``-1`` for that target and is left out of that target's training and scores
only, and the count is reported in ``FusionData.notes``. Clinical values are kept
raw (``NaN`` when missing); implausible values are set missing by
:func:`meddx.fusion.clinical.clean_clinical`, which counts what it changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from meddx.exceptions import ConfigError, DatasetNotFoundError

COVID_SET = "covid-cxr-ieee8023-lungbbox"
#: clinical columns read from the covid set's metadata.csv (baseline values only: no ICU, intubation
#: or outcome columns, which happen after the X-ray or are the target)
COVID_FEATURES = ("age", "sex", "temperature", "pO2_saturation", "leukocyte_count", "neutrophil_count",
                  "lymphocyte_count")
COVID_TARGETS = {"covid": ["other finding", "COVID-19"], "survival": ["survived", "died"]}
_UNKNOWN_FINDING = {"", "todo", "unknown", "missing metadata"}
RESERVED = {"image", "file", "patientid", "split"}


@dataclass
class FusionData:
    """Images (grey uint8, ``size``×``size``), raw clinical table, patient groups and targets."""

    images: np.ndarray
    files: list[str]
    clinical: Any  # pandas.DataFrame, one row per image, feature columns only
    groups: np.ndarray
    targets: dict[str, np.ndarray]  # target -> int labels, -1 = unknown
    class_names: dict[str, list[str]]
    source: str
    notes: dict[str, Any] = field(default_factory=dict)

    def labelled(self, target: str) -> np.ndarray:
        """Indices of the rows whose ``target`` is known."""
        return np.flatnonzero(self.targets[target] >= 0)


def pad_square(image: np.ndarray) -> np.ndarray:
    """Zero-pad a grey image to a centred square (as ``meddx.data.datasets`` does)."""
    h, w = image.shape[:2]
    side = max(h, w)
    out = np.zeros((side, side), dtype=image.dtype)
    y0, x0 = (side - h) // 2, (side - w) // 2
    out[y0:y0 + h, x0:x0 + w] = image
    return out


def read_image(path: str | Path, size: int) -> np.ndarray:
    """One image file as a grey uint8 ``size``×``size`` array (padded to a square, bilinear)."""
    from PIL import Image

    path = Path(path)
    if path.suffix.lower() in {".dcm", ".dicom", ".nii", ".gz"}:
        from meddx import read

        sample = read(path)
        array = np.squeeze(np.asarray(getattr(sample, "array", sample), dtype=np.float64))
        if array.ndim == 3:
            array = array[array.shape[0] // 2]
        lo, hi = np.percentile(array, [1, 99])
        grey = np.clip((array - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
    else:
        with Image.open(path) as img:
            grey = np.asarray(img.convert("L"))
    square = pad_square(grey)
    return np.asarray(Image.fromarray(square).resize((size, size), Image.BILINEAR), dtype=np.uint8)


def _covid_folder() -> Path:
    from meddx.data.catalogue import fetch

    return Path(fetch(COVID_SET))


def load_covid(size: int = 64) -> FusionData:
    """The 609 X-rays of covid-cxr-ieee8023-lungbbox with their clinical values and two targets.

    ``covid``: 1 when the finding contains "COVID-19", 0 for any other known finding,
    -1 for "todo"/"Unknown"/no metadata (the rule of ``meddx.data.datasets``).
    ``survival``: 1 = died (``survival == "N"``), 0 = survived (``"Y"``), -1 unknown.
    """
    import json

    import pandas as pd

    from meddx.fusion.clinical import clean_clinical

    folder = _covid_folder()
    coco = json.loads((folder / "annotations_coco_max384.json").read_text(encoding="utf-8"))
    meta = pd.read_csv(folder / "metadata.csv", dtype=str, keep_default_na=False)
    by_file = {row["filename"]: row for row in meta.to_dict("records")}
    images, files, groups, rows, covid, survival = [], [], [], [], [], []
    no_meta = 0
    for record in sorted(coco["images"], key=lambda r: r["file_name"]):
        row = by_file.get(record["orig_file_name"])
        if row is None:
            no_meta += 1
            row = {}
        path = folder / "images_max384" / record["file_name"]
        images.append(read_image(path, size))
        files.append(str(path))
        groups.append(row.get("patientid") or f"image:{record['file_name']}")
        rows.append({c: (row.get(c) or None) for c in COVID_FEATURES})
        finding = (row.get("finding") or "").strip()
        covid.append(-1 if finding.lower() in _UNKNOWN_FINDING else int("COVID-19" in finding))
        surv = (row.get("survival") or "").strip().upper()
        survival.append({"N": 1, "Y": 0}.get(surv, -1))
    clinical = pd.DataFrame(rows, columns=list(COVID_FEATURES))
    clinical, cleaning = clean_clinical(clinical)
    targets = {"covid": np.asarray(covid, dtype=np.int64), "survival": np.asarray(survival, dtype=np.int64)}
    notes = {"images": len(files), "without_metadata": no_meta, "cleaning": cleaning,
             "licence": "per image (metadata.csv `license`), mostly CC BY-NC-SA / CC BY; research only",
             "unknown_target": {t: int((v < 0).sum()) for t, v in targets.items()},
             "features_observed": {c: int(clinical[c].notna().sum()) for c in clinical.columns}}
    return FusionData(np.stack(images), files, clinical, np.asarray(groups, dtype=object), targets,
                      {k: list(v) for k, v in COVID_TARGETS.items()}, COVID_SET, notes)


def load_folder(folder: str | Path, size: int = 64, target: str = "label",
                class_names: list[str] | None = None) -> FusionData:
    """A folder with ``clinical.csv``: ``image`` (relative path), optional ``patientid``/``split``, target
    column(s) and any other columns as clinical features (numeric, or text = categorical).

    The target column may hold class names or 0/1; empty = unknown (-1).
    """
    import pandas as pd

    from meddx.fusion.clinical import clean_clinical

    folder = Path(folder)
    table_path = folder / "clinical.csv"
    if not table_path.is_file():
        raise DatasetNotFoundError("no clinical.csv in the folder", path=folder,
                                   hint="A fusion folder holds clinical.csv (image, patientid, label, features...)")
    table = pd.read_csv(table_path, dtype=str, keep_default_na=False)
    if "image" not in table.columns:
        raise ConfigError("clinical.csv has no 'image' column", path=table_path, field="image")
    if target not in table.columns:
        raise ConfigError(f"clinical.csv has no target column {target!r}", path=table_path, field="target",
                          hint=f"Columns: {', '.join(table.columns)}")
    raw = [str(v).strip() for v in table[target]]
    known = sorted({v for v in raw if v})
    if class_names is None:
        class_names = known if set(known) != {"0", "1"} and set(known) != {"1", "0"} else ["0", "1"]
        if len(class_names) != 2:
            raise ConfigError(f"target {target!r} must have two classes, found {known}", path=table_path,
                              field=target)
    index = {name: i for i, name in enumerate(class_names)}
    labels = np.asarray([index.get(v, -1) if v else -1 for v in raw], dtype=np.int64)
    images = [read_image(folder / name, size) for name in table["image"]]
    groups = table["patientid"] if "patientid" in table.columns else table["image"]
    features = [c for c in table.columns if c not in RESERVED and c != target]
    others = [c for c in features if c.startswith("target_") or c == "label"]
    features = [c for c in features if c not in others]
    clinical = table[features].replace("", None)
    clinical, cleaning = clean_clinical(clinical)
    targets = {target: labels}
    notes = {"images": len(images), "cleaning": cleaning, "unknown_target": {target: int((labels < 0).sum())},
             "features_observed": {c: int(clinical[c].notna().sum()) for c in clinical.columns}}
    if "split" in table.columns:
        notes["split"] = [str(s) for s in table["split"]]
    return FusionData(np.stack(images), [str(folder / n) for n in table["image"]], clinical,
                      np.asarray([str(g) for g in groups], dtype=object), targets, {target: list(class_names)},
                      str(folder), notes)


def load(data: str, size: int = 64, target: str | None = None,
         class_names: list[str] | None = None) -> tuple[FusionData, str]:
    """Load a fusion source (``fusion:`` prefix optional); return the data and the target used."""
    from meddx.fusion import PREFIX

    name = data[len(PREFIX):] if data.startswith(PREFIX) else data
    if name == COVID_SET:
        target = target or "covid"
        if target not in COVID_TARGETS:
            raise ConfigError(f"unknown target {target!r} for {COVID_SET}", field="model",
                              hint=f"Use one of: {', '.join(COVID_TARGETS)} (e.g. --model intermediate:survival)")
        return load_covid(size), target
    if Path(name).is_dir():
        target = target or "label"
        return load_folder(name, size, target, class_names), target
    raise DatasetNotFoundError(f"{data} is not a fusion source", field="data",
                               hint=f"Use fusion:{COVID_SET} or a folder with clinical.csv and images")
