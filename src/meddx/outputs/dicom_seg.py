"""DICOM Segmentation (SEG) objects for the masks meddx models predict, via highdicom.

:func:`write_seg` turns a label map (0 = background, ``k`` = ``classes[k-1]``)
into a BINARY SEG, or a probability map into a FRACTIONAL (probability) SEG,
that references the source image(s) and copies their geometry: pixel spacing,
image position and orientation, frame of reference. The SEG is marked as a
derived image (ImageType ``DERIVED\\PRIMARY``, a Derivation Image Sequence per
frame pointing at its source frame, purpose "Source image for image processing
operation"); every segment names the algorithm (``algorithm`` + ``version``,
family "Artificial Intelligence") and is coded with SNOMED CT concepts from
:mod:`meddx.outputs.codes`.

:func:`read_seg` reads one back (with highdicom ``segread``) into the same
label map, the class names and the geometry, so a round trip can be checked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from meddx.exceptions import ConfigError, InvalidValueError, LabelShapeError
from meddx.outputs._sources import check_mask_shape, load_sources, where
from meddx.outputs.codes import concepts_for

MANUFACTURER = "meddx"
DEFAULT_SERIES_NUMBER = 900


def _check_classes(classes: Sequence[str]) -> list[str]:
    names = [str(c) for c in classes]
    if not names:
        raise ConfigError("the class list is empty", field="classes",
                          hint="Name one class per non-zero mask value, e.g. classes=['vessel']")
    if any(not n.strip() for n in names) or len(set(names)) != len(names):
        raise ConfigError(f"class names must be distinct and not blank: {names}", field="classes",
                          hint="Give each segment its own name")
    return names


def _output_path(out: Path, sop_uid: str, prefix: str) -> Path:
    out = Path(out)
    if out.is_dir():
        out = out / f"{prefix}_{sop_uid}.dcm"
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def write_seg(
    source: Sequence[Any] | Any,
    mask: np.ndarray,
    *,
    classes: Sequence[str],
    out: Path,
    algorithm: str,
    version: str,
    probability: np.ndarray | None = None,
    codes: Mapping[str, tuple[Any, Any]] | None = None,
    series_number: int = DEFAULT_SERIES_NUMBER,
    series_description: str | None = None,
) -> Path:
    """Write a DICOM SEG for ``mask`` on ``source`` and return its path.

    Args:
        source: the image(s) the mask was computed on: pydicom Datasets or paths (a
            single one, or a list of single-frame slices in the order of the mask's frames).
        mask: label map ``(rows, cols)`` or ``(frames, rows, cols)``; 0 is background and
            value ``k`` is ``classes[k - 1]``. A boolean mask is one class.
        classes: one name per segment (``["vessel"]``, ``["RBC", "WBC"]``).
        out: the file to write, or an existing folder (then ``SEG_<SOPInstanceUID>.dcm``).
        algorithm: the model's name, recorded as the segmentation algorithm.
        version: the model's version.
        probability: optional probabilities in [0, 1], shaped like ``mask`` (one class)
            or ``mask.shape + (len(classes),)``; then the SEG is FRACTIONAL (PROBABILITY),
            quantised to 1/255.
        codes: ``{class name: (category Code, type Code)}`` overriding :mod:`meddx.outputs.codes`.
        series_number: SeriesNumber of the new SEG series.
        series_description: SeriesDescription (default ``"<algorithm> segmentation"``).

    Raises:
        ConfigError: empty or duplicated class names.
        MissingFieldError: a source is not an image (e.g. an ECG waveform).
        LabelShapeError: the mask or probability does not match rows/columns/frames of the source.
        InvalidValueError: mask values beyond the classes, probabilities outside [0, 1].
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes as dcm_codes

    names = _check_classes(classes)
    datasets = load_sources(source)
    labels = check_mask_shape(mask, datasets)
    if labels.dtype == bool:
        labels = labels.astype(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise InvalidValueError("the mask holds non-integer values", path=where(datasets[0]), field="mask",
                                    hint="Give a label map (0 = background, k = classes[k-1]), or pass "
                                    "probabilities with probability=")
        labels = labels.astype(np.int64)
    top = int(labels.max()) if labels.size else 0
    if int(labels.min()) < 0 or top > len(names):
        raise InvalidValueError(
            f"mask values run from {int(labels.min())} to {top} but there are {len(names)} class(es)",
            path=where(datasets[0]), field="mask",
            hint=f"Use 0 for background and 1..{len(names)} for {names}, or add the missing class names",
        )

    algorithm_id = hd.AlgorithmIdentificationSequence(
        name=algorithm, family=dcm_codes.cid7162.ArtificialIntelligence, version=str(version)
    )
    descriptions = []
    for number, name in enumerate(names, start=1):
        category, kind = concepts_for(name, codes)
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=name,
            segmented_property_category=category,
            segmented_property_type=kind,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm_id,
            tracking_uid=hd.UID(),
            tracking_id=name,
        ))

    if probability is None:
        pixels: np.ndarray = labels.astype(np.uint8 if len(names) < 256 else np.uint16)
        seg_type = hd.seg.SegmentationTypeValues.BINARY
    else:
        pixels = _probability(probability, labels.shape, len(names), datasets[0])
        seg_type = hd.seg.SegmentationTypeValues.FRACTIONAL

    sop_uid = hd.UID()
    seg = hd.seg.Segmentation(
        source_images=datasets,
        pixel_array=pixels,
        segmentation_type=seg_type,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=int(series_number),
        sop_instance_uid=sop_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=algorithm,
        software_versions=str(version),
        device_serial_number="0",
        fractional_type=hd.seg.SegmentationFractionalTypeValues.PROBABILITY,
        content_description=f"{algorithm} {version}"[:64],
        content_label="MEDDX_SEG",
        omit_empty_frames=False,
    )
    seg.SeriesDescription = (series_description or f"{algorithm} segmentation")[:64]
    seg.DerivationDescription = f"Automatic segmentation by {algorithm} {version} (meddx)"[:1024]
    path = _output_path(out, sop_uid, "SEG")
    seg.save_as(path)
    return path


def _probability(probability: np.ndarray, spatial: tuple[int, ...], n_classes: int, first: Any) -> np.ndarray:
    prob = np.asarray(probability, dtype=np.float64)
    if spatial[0] == 1 and prob.shape in ((*spatial[1:], n_classes), spatial[1:]):
        prob = prob[None]  # one frame given without its frame axis
    if prob.shape == spatial and n_classes == 1:
        prob = prob[..., None]
    if prob.shape != (*spatial, n_classes):
        raise LabelShapeError(
            f"probability has shape {np.shape(probability)} but the mask is {spatial} with {n_classes} class(es)",
            path=where(first), field="probability",
            hint=f"Give probabilities of shape {(*spatial, n_classes)} (frames, rows, cols, classes)",
        )
    if not np.all(np.isfinite(prob)) or prob.min() < 0 or prob.max() > 1:
        raise InvalidValueError("probabilities must be finite and within [0, 1]", path=where(first),
                                field="probability", hint="Apply a sigmoid or softmax before writing")
    return prob.astype(np.float32)


def read_seg(path: str | Path, *, as_probability: bool = False) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """Read a DICOM SEG back: ``(mask, classes, geometry)``.

    ``mask`` is a label map ``(frames, rows, cols)`` (0 = background, ``k`` =
    ``classes[k-1]``), one frame per referenced source image in the order they
    were written. For a FRACTIONAL SEG a voxel takes the most probable class
    whose probability is at least 0.5; ``as_probability=True`` returns the
    probabilities ``(frames, rows, cols, classes)`` instead. ``geometry`` holds
    ``pixel_spacing`` (row, col mm), ``slice_thickness``, ``image_orientation``
    (6 floats), ``image_positions`` (one per frame), ``frame_of_reference_uid``,
    ``source_sop_instance_uids``, ``segmentation_type``, ``algorithm`` and ``version``.
    """
    import highdicom as hd

    from meddx.data.readers.dicom import open_dataset

    path = Path(path)
    ds = open_dataset(path)
    if str(ds.get("SOPClassUID")) != "1.2.840.10008.5.1.4.1.1.66.4":
        sop = getattr(ds.get("SOPClassUID"), "name", ds.get("SOPClassUID"))
        raise InvalidValueError(f"not a DICOM Segmentation (SOP class {sop})", path=path,
                                field="SOPClassUID", hint="Pass a file written by write_seg or another SEG")
    seg = hd.seg.Segmentation.from_dataset(ds, copy=False)
    uids = [str(inst.ReferencedSOPInstanceUID)
            for series in seg.ReferencedSeriesSequence for inst in series.ReferencedInstanceSequence]
    numbers = list(seg.segment_numbers)
    classes = [str(seg.get_segment_description(n).SegmentLabel) for n in numbers]
    fractional = seg.segmentation_type == hd.seg.SegmentationTypeValues.FRACTIONAL
    stack = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, segment_numbers=numbers, combine_segments=False,
        rescale_fractional=True, dtype=np.float32 if fractional else np.uint8,
    )
    if fractional and as_probability:
        mask = stack.astype(np.float32)
    elif fractional:
        best = stack.argmax(axis=-1)
        mask = np.where(stack.max(axis=-1) >= 0.5, best + 1, 0).astype(np.uint8)
    else:
        weights = np.arange(1, len(numbers) + 1, dtype=np.uint16)
        mask = (stack.astype(np.uint16) * weights).max(axis=-1).astype(np.uint8 if len(numbers) < 256 else np.uint16)

    shared = seg.SharedFunctionalGroupsSequence[0]
    measures = shared.PixelMeasuresSequence[0] if "PixelMeasuresSequence" in shared else {}
    orientation = (shared.PlaneOrientationSequence[0].ImageOrientationPatient
                   if "PlaneOrientationSequence" in shared else None)
    positions: dict[str, list[float]] = {}
    for frame in seg.PerFrameFunctionalGroupsSequence:
        source_uid = str(frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        if "PlanePositionSequence" in frame:
            positions.setdefault(source_uid, [float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient])
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    geometry = {
        "pixel_spacing": tuple(float(v) for v in measures["PixelSpacing"].value) if "PixelSpacing" in measures
        else None,
        "slice_thickness": float(measures["SliceThickness"].value) if "SliceThickness" in measures else None,
        "image_orientation": tuple(float(v) for v in orientation) if orientation is not None else None,
        "frame_of_reference_uid": str(seg.get("FrameOfReferenceUID") or "") or None,
        "image_positions": [positions.get(uid) for uid in uids],
        "source_sop_instance_uids": uids,
        "segmentation_type": str(seg.SegmentationType),
        "algorithm": str(algorithm.AlgorithmName),
        "version": str(algorithm.AlgorithmVersion),
        "sop_instance_uid": str(seg.SOPInstanceUID),
    }
    return mask, classes, geometry


__all__ = ["read_seg", "write_seg"]
