"""DICOM Structured Reports (TID 1500 Measurement Report) for meddx findings, via highdicom.

:func:`write_sr` writes a Comprehensive 3D SR whose content is a TID 1500
*Imaging Measurement Report*, observed by a device (the meddx model):

* each box finding ``{"label", "score", "box": [x0, y0, x1, y1]}`` is a planar ROI
  group (TID 1410) with a closed POLYLINE image region (SCOORD) on the source
  image, the class as finding type and as a qualitative evaluation (Classification =
  class code), the box area (mm² when PixelSpacing is known, always in pixels)
  and the score (Certainty of Finding, unit 1);
* the number of boxes per class is an image-level group (TID 1501) with
  "Number of occurrences";
* each mask finding ``{"label", "area_px", "fraction"}`` is a planar ROI group
  that references its segment in ``seg`` (a SEG from :func:`~meddx.outputs.write_seg`)
  when one is given, otherwise an image-level group; both carry the area and
  the fraction of the image.

Box coordinates are DICOM image coordinates: columns then rows, (0, 0) the
outer corner of the top-left pixel, so ``[0, 0, cols, rows]`` is the whole image.
:func:`read_sr` reads the findings back in the same form.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from meddx.exceptions import ConfigError, InvalidValueError, MissingFieldError
from meddx.outputs._sources import load_sources, where
from meddx.outputs.codes import concepts_for
from meddx.outputs.dicom_seg import MANUFACTURER, _output_path

DEFAULT_SERIES_NUMBER = 901
_SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


def _concepts() -> dict[str, Any]:
    from highdicom.sr import CodedConcept
    from pydicom.sr.codedict import codes

    return {
        "area": codes.SCT.Area,
        "count": codes.SCT.NumberOfOccurrences,
        "score": codes.DCM.CertaintyOfFinding,
        "classification": codes.SCT.Classification,
        "fraction": CodedConcept("fraction", "99MEDDX", "Fraction of image area"),
        "mm2": codes.UCUM.SquareMillimeter,
        "pixels": CodedConcept("{pixels}", "UCUM", "pixels"),
        "one": codes.UCUM.NoUnits,
        "procedure": codes.SCT.ImagingProcedure,
    }


def _number(value: Any, field: str, path: str | None) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise InvalidValueError(f"{field} is {value!r}, not a finite number", path=path, field=field,
                                hint="Give numbers for boxes, scores, areas and fractions")
    return number


def _check_findings(findings: Sequence[Mapping[str, Any]], rows: int, cols: int, path: str | None) -> None:
    if not isinstance(findings, (list, tuple)):
        raise ConfigError(f"findings must be a list of dicts, not {type(findings).__name__}", field="findings")
    for i, item in enumerate(findings):
        name = f"findings[{i}]"
        if not isinstance(item, Mapping) or not str(item.get("label") or "").strip():
            raise ConfigError(f"{name} has no label", field=f"{name}.label",
                              hint='Each finding is {"label": ..., "box": [x0, y0, x1, y1]} or '
                              '{"label": ..., "area_px": ..., "fraction": ...}')
        if "box" not in item and "area_px" not in item:
            raise ConfigError(f"{name} has neither box nor area_px", field=name,
                              hint="Give a box [x0, y0, x1, y1] or a mask area area_px (and fraction)")
        if "score" in item and item["score"] is not None:
            score = _number(item["score"], f"{name}.score", path)
            if not 0 <= score <= 1:
                raise InvalidValueError(f"{name}.score is {score}, outside [0, 1]", path=path,
                                        field=f"{name}.score", hint="Give a probability")
        if "box" in item:
            box = item["box"]
            if not isinstance(box, (list, tuple)) or len(box) != 4:
                raise ConfigError(f"{name}.box is {box!r}, not [x0, y0, x1, y1]", field=f"{name}.box")
            x0, y0, x1, y1 = (_number(v, f"{name}.box", path) for v in box)
            if not (0 <= x0 < x1 <= cols and 0 <= y0 < y1 <= rows):
                raise InvalidValueError(
                    f"{name}.box {list(box)} is empty or outside the image of {cols} columns x {rows} rows",
                    path=path, field=f"{name}.box",
                    hint=f"Boxes are [x0, y0, x1, y1] in pixels with 0 <= x0 < x1 <= {cols} and "
                    f"0 <= y0 < y1 <= {rows}; clip them to the image",
                )
        if "area_px" in item:
            area = _number(item["area_px"], f"{name}.area_px", path)
            fraction = _number(item.get("fraction", area / (rows * cols)), f"{name}.fraction", path)
            if area < 0 or not 0 <= fraction <= 1:
                raise InvalidValueError(f"{name} has area_px {area} / fraction {fraction}", path=path, field=name,
                                        hint="area_px must be >= 0 and fraction within [0, 1]")


def _segment_frames(seg: Any, source_uid: str, seg_path: Path) -> dict[str, tuple[int, int]]:
    """Segment label -> (segment number, frame number on ``source_uid``) in a SEG data set."""
    numbers = {str(item.SegmentLabel): int(item.SegmentNumber) for item in seg.SegmentSequence}
    frames: dict[int, int] = {}
    for index, frame in enumerate(seg.PerFrameFunctionalGroupsSequence, start=1):
        uid = str(frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        if uid == source_uid:
            frames.setdefault(int(frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber), index)
    if not frames:
        raise InvalidValueError("the SEG does not reference the SR's source image", path=seg_path,
                                field="ReferencedSOPInstanceUID",
                                hint="Write the SEG and the SR for the same source image")
    return {label: (number, frames[number]) for label, number in numbers.items() if number in frames}


def write_sr(
    source: Any,
    *,
    findings: Sequence[Mapping[str, Any]],
    out: Path,
    algorithm: str,
    version: str,
    seg: Path | None = None,
    codes: Mapping[str, tuple[Any, Any]] | None = None,
    series_number: int = DEFAULT_SERIES_NUMBER,
) -> Path:
    """Write a TID 1500 Measurement Report (Comprehensive 3D SR) for ``findings``; return its path.

    Args:
        source: the image the findings are on (a pydicom Dataset or a path).
        findings: ``{"label", "score", "box": [x0, y0, x1, y1]}`` per detection and/or
            ``{"label", "area_px", "fraction"}`` per mask class (see the module docstring).
        out: the file to write, or an existing folder (then ``SR_<SOPInstanceUID>.dcm``).
        algorithm: the model's name (observer device and algorithm identification).
        version: the model's version.
        seg: a SEG of the same image; mask findings then reference the segment whose
            label is the finding's label.
        codes: ``{class name: (category Code, type Code)}`` overriding :mod:`meddx.outputs.codes`.
        series_number: SeriesNumber of the new SR series.

    Raises:
        MissingFieldError: the source is not an image; a mask label has no segment in ``seg``.
        InvalidValueError: a box outside the image, a score outside [0, 1], a non-finite number.
        ConfigError: a finding without label, or without box and area_px.
    """
    import highdicom as hd

    from meddx.data.readers.dicom import open_dataset

    ds = load_sources(source)[0]
    rows, cols = int(ds.Rows), int(ds.Columns)
    _check_findings(findings, rows, cols, where(ds))
    spacing = ds.get("PixelSpacing")
    pixel_mm2 = float(spacing[0]) * float(spacing[1]) if spacing is not None and len(spacing) == 2 else None
    c = _concepts()
    algorithm_id = hd.sr.AlgorithmIdentification(name=algorithm, version=str(version))
    evidence = [ds]
    segments: dict[str, tuple[int, int]] = {}
    seg_ds = None
    if seg is not None:
        seg_ds = open_dataset(Path(seg))
        if str(seg_ds.get("SOPClassUID")) != _SEG_SOP_CLASS:
            raise InvalidValueError("seg is not a DICOM Segmentation", path=seg, field="SOPClassUID",
                                    hint="Pass the file write_seg returned")
        segments = _segment_frames(seg_ds, str(ds.SOPInstanceUID), Path(seg))
        evidence.append(seg_ds)

    def area_measurements(area_px: float) -> list[Any]:
        out_ = [hd.sr.Measurement(name=c["area"], value=area_px, unit=c["pixels"], algorithm_id=algorithm_id)]
        if pixel_mm2 is not None:
            out_.insert(0, hd.sr.Measurement(name=c["area"], value=area_px * pixel_mm2, unit=c["mm2"],
                                             algorithm_id=algorithm_id))
        return out_

    groups: list[Any] = []
    counts: dict[str, int] = {}
    for i, item in enumerate(findings):
        label = str(item["label"]).strip()
        category, kind = concepts_for(label, codes)
        common = {
            "tracking_identifier": hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"{label} #{i + 1}"),
            "finding_type": kind,
            "finding_category": category,
            "algorithm_id": algorithm_id,
            "qualitative_evaluations": [hd.sr.QualitativeEvaluation(name=c["classification"], value=kind)],
        }
        if "box" in item:
            x0, y0, x1, y1 = (float(v) for v in item["box"])
            measurements = area_measurements((x1 - x0) * (y1 - y0))
            if item.get("score") is not None:
                measurements.append(hd.sr.Measurement(name=c["score"], value=float(item["score"]), unit=c["one"],
                                                      algorithm_id=algorithm_id))
            region = hd.sr.ImageRegion(
                graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                graphic_data=np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=float),
                source_image=hd.sr.SourceImageForRegion.from_source_image(ds),
            )
            groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                referenced_region=region, measurements=measurements, **common))
            counts[label] = counts.get(label, 0) + 1
            continue
        area = float(item["area_px"])
        measurements = area_measurements(area)
        fraction = float(item.get("fraction", area / (rows * cols)))
        measurements.append(hd.sr.Measurement(name=c["fraction"], value=fraction, unit=c["one"],
                                              algorithm_id=algorithm_id))
        if seg_ds is not None:
            if label not in segments:
                raise MissingFieldError(
                    f"findings[{i}] is labelled {label!r} but the SEG has no such segment on this image",
                    path=seg, field="SegmentLabel",
                    hint=f"Segments of the SEG: {', '.join(sorted(segments)) or 'none'}; use the same class names",
                )
            number, frame = segments[label]
            reference = hd.sr.ReferencedSegmentationFrame(
                sop_class_uid=_SEG_SOP_CLASS, sop_instance_uid=str(seg_ds.SOPInstanceUID), frame_number=frame,
                segment_number=number, source_image=hd.sr.SourceImageForSegmentation.from_source_image(ds),
            )
            groups.append(hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                referenced_segment=reference, measurements=measurements, **common))
        else:
            groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
                measurements=measurements,
                source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(ds)], **common))
    for label, count in counts.items():
        category, kind = concepts_for(label, codes)
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=f"{label} count"),
            finding_type=kind, finding_category=category, algorithm_id=algorithm_id,
            measurements=[hd.sr.Measurement(name=c["count"], value=count, unit=c["one"], algorithm_id=algorithm_id)],
            source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(ds)],
        ))

    observer = hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=hd.sr.CodedConcept("121007", "DCM", "Device"),
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name=algorithm, manufacturer_name=MANUFACTURER, model_name=f"{algorithm} {version}"[:64]),
    ))
    report = hd.sr.MeasurementReport(observation_context=observer, procedure_reported=c["procedure"],
                                     imaging_measurements=groups or None)
    sop_uid = hd.UID()
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence, content=report, series_instance_uid=hd.UID(), series_number=int(series_number),
        sop_instance_uid=sop_uid, instance_number=1, manufacturer=MANUFACTURER, is_complete=True,
    )
    sr.SeriesDescription = f"{algorithm} findings"[:64]
    path = _output_path(out, sop_uid, "SR")
    sr.save_as(path)
    return path


def _label(identifier: str) -> str:
    return identifier.rsplit(" #", 1)[0] if " #" in identifier else identifier.removesuffix(" count")


def read_sr(path: str | Path) -> list[dict[str, Any]]:
    """Read the findings of a TID 1500 report written by :func:`write_sr`.

    Returns dicts in the writer's form: ``{"label", "box", "score", "area_px", "area_mm2"}``
    for boxes, ``{"label", "area_px", "fraction", "area_mm2", "segment_number"}`` for masks
    (``segment_number`` when a SEG was referenced), and ``{"label", "count"}`` per class
    of boxes. ``"code"`` is the class's (value, scheme, meaning).
    """
    import highdicom as hd

    from meddx.data.readers.dicom import open_dataset

    path = Path(path)
    ds = open_dataset(path)
    if "ContentSequence" not in ds or str(ds.get("ValueType")) != "CONTAINER":
        raise MissingFieldError("not a structured report (no CONTAINER root content)", path=path,
                                field="ContentSequence", hint="Pass a file written by write_sr")
    sr = hd.sr.srread(path)
    report = sr.content
    findings: list[dict[str, Any]] = []
    c = _concepts()

    def values(group: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"label": _label(str(group.tracking_identifier))}
        kind = group.finding_type
        if kind is not None:
            out["code"] = (kind.value, kind.scheme_designator, kind.meaning)
        for m in group.get_measurements():
            unit = m.unit.value
            if m.name == c["area"]:
                out["area_mm2" if unit == "mm2" else "area_px"] = float(m.value)
            elif m.name == c["score"]:
                out["score"] = float(m.value)
            elif m.name == c["fraction"]:
                out["fraction"] = float(m.value)
            elif m.name == c["count"]:
                out["count"] = int(round(float(m.value)))
        return out

    for group in report.get_planar_roi_measurement_groups():
        item = values(group)
        if group.roi is not None:
            points = group.roi.value
            xs, ys = [float(p[0]) for p in points], [float(p[1]) for p in points]
            item["box"] = [min(xs), min(ys), max(xs), max(ys)]
        reference = group.referenced_segmentation_frame
        if reference is not None:
            item["segment_number"] = int(reference.referenced_segment_numbers[0])
            item["seg_sop_instance_uid"] = str(reference.referenced_sop_instance_uid)
        findings.append(item)
    for group in report.get_image_measurement_groups():
        findings.append(values(group))
    return findings


__all__ = ["read_sr", "write_sr"]
