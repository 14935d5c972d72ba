"""FHIR JSON (a Bundle or a single resource) as typed patient and observation rows.

Validation uses the **R4B** (FHIR 4.3.0) models of ``fhir.resources`` 8.x: that
release ships R5 (its default), R4B and STU3, but no R4 (4.0.1) package. R4B is
the closest model set to R4 (the resources meddx extracts, Patient and
Observation, are the same in both).

Real-world bundles often break cardinality rules (the CDC translation samples
have Observations without ``code``), so validation is a choice:

* ``validate="warn"`` (default): each resource is validated on its own; problems
  go to ``meta["validation_issues"]`` (``"Observation/<id>: code: Field required"``),
  and the rows are still extracted;
* ``validate="strict"``: the first problem raises :class:`InvalidValueError`
  naming the resource and field;
* ``validate="off"``: no model validation (fastest).

Rows are extracted from the JSON itself, so a resource that fails validation
still gives what it has. Values that cannot be typed (a non-numeric
``valueQuantity.value``) always raise, naming the resource and field.
Inputs are bounded: ``max_bytes`` (default 256 MiB) and ``max_depth`` (default
64 levels of JSON nesting).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meddx.data.readers._base import Reader, read_bounded, register_reader
from meddx.data.sample import RecordSample
from meddx.exceptions import (
    ConfigError,
    CorruptFileError,
    EmptyDataError,
    InvalidValueError,
    UnsupportedFormatError,
)

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

PATIENT_COLUMNS: tuple[str, ...] = ("id", "family", "given", "sex", "birth_date")
"""Columns of ``RecordSample.patients`` (FHIR and HL7 v2 readers alike)."""

OBSERVATION_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "code",
    "system",
    "display",
    "value",
    "value_string",
    "unit",
    "time",
    "status",
)
"""Leading columns of ``RecordSample.observations`` (FHIR and HL7 v2 readers alike).

``value`` is a float where the observation is numeric, else NaN; ``value_string``
holds the text of non-numeric values; ``time`` is an ISO 8601 string.
"""

LOINC = "http://loinc.org"
FHIR_MODELS = "R4B"
MAX_BYTES = 256 * 1024 * 1024
MAX_DEPTH = 64
MAX_ISSUES = 500  # validation issues kept in meta (the count is always exact)

_OPTIONS = frozenset({"validate", "max_bytes", "max_depth"})
_DECIMAL = re.compile(r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$")
"""FHIR's decimal syntax: ``nan``, ``inf``, ``1_000`` or ``0x10`` are not numbers here."""
_VALIDATE_MODES = ("warn", "strict", "off")


def make_frame(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> pd.DataFrame:
    """A DataFrame with ``columns`` first (and any extra keys after), even when empty."""
    import pandas as pd

    extra: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns and key not in extra:
                extra.append(key)
    frame = pd.DataFrame(rows, columns=[*columns, *extra])
    if "value" in frame.columns:
        frame["value"] = frame["value"].astype("float64")
    return frame


def _max_depth_exceeds(value: Any, limit: int) -> bool:
    """True if ``value`` nests dicts/lists deeper than ``limit`` (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, dict | list))
    return False


def _resource_name(resource: dict[str, Any]) -> str:
    rid = resource.get("id")
    return f"{resource.get('resourceType', '?')}/{rid}" if rid else str(resource.get("resourceType", "?"))


def _iter_resources(
    path: Path, resource: dict[str, Any], where: str = "Bundle"
) -> Iterator[tuple[dict[str, Any], str | None]]:
    """Yield ``(resource, fullUrl)`` for a resource, or for each entry of a Bundle (nested too)."""
    if resource.get("resourceType") != "Bundle":
        yield resource, None
        return
    entries = resource.get("entry", [])
    if not isinstance(entries, list):
        raise CorruptFileError(
            f"{where}.entry is a {type(entries).__name__}, not a list", path=path, field=f"{where}.entry"
        )
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise CorruptFileError(
                f"{where}.entry[{i}] is not an object", path=path, field=f"{where}.entry[{i}]"
            )
        inner = entry.get("resource")
        if inner is None:
            continue  # e.g. a request-only entry of a transaction
        if not isinstance(inner, dict) or not isinstance(inner.get("resourceType"), str):
            raise CorruptFileError(
                f"{where}.entry[{i}].resource has no resourceType",
                path=path,
                field=f"{where}.entry[{i}].resource",
            )
        full_url = entry.get("fullUrl") if isinstance(entry.get("fullUrl"), str) else None
        yield inner, full_url
        if inner["resourceType"] == "Bundle":
            nested = f"{where}.entry[{i}].resource"
            for item in _iter_resources(path, inner, nested):
                yield item


def _primitive_extension_issues(value: Any, loc: str = "") -> tuple[Any, list[tuple[str, str]]]:
    """Drop primitive extensions (``_birthDate``) that are not objects; report each as ``(field, message)``.

    FHIR JSON puts a primitive's id and extensions in ``_name``: an object, or for a
    repeating primitive a list of objects and nulls. The R4B models call ``.get``
    on it and fail with a raw AttributeError otherwise, so such values are checked
    here, reported with their location and left out of the model validation.
    """
    issues: list[tuple[str, str]] = []
    root = _copy_containers(value)
    stack: list[tuple[Any, str]] = [(root, loc)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, dict):
            for key in list(item):
                child = item[key]
                here = f"{where}.{key}" if where else str(key)
                if isinstance(key, str) and key.startswith("_") and len(key) > 1:
                    ok = isinstance(child, dict) or (
                        isinstance(child, list) and all(isinstance(c, dict) or c is None for c in child)
                    )
                    if not ok:
                        issues.append(
                            (here, f"primitive extension is {type(child).__name__}, "
                                   "not an object (or a list of objects)")
                        )
                        del item[key]
                        continue
                if isinstance(child, dict | list):
                    stack.append((child, here))
        elif isinstance(item, list):
            stack.extend((child, f"{where}.{i}") for i, child in enumerate(item) if isinstance(child, dict | list))
    return root, issues


def _copy_containers(value: Any) -> Any:
    """A copy of the dict/list skeleton of ``value`` (leaves shared), built without recursion."""
    if not isinstance(value, dict | list):
        return value
    root: Any = {} if isinstance(value, dict) else []
    stack = [(value, root)]
    while stack:
        src, dst = stack.pop()
        items = src.items() if isinstance(src, dict) else enumerate(src)
        for key, child in items:
            copy: Any = child
            if isinstance(child, dict | list):
                copy = {} if isinstance(child, dict) else []
                stack.append((child, copy))
            if isinstance(dst, dict):
                dst[key] = copy
            else:
                dst.append(copy)
    return root


def _validation_issues(resource: dict[str, Any]) -> list[tuple[str, str]]:
    """``(field, message)`` problems of one resource against the R4B models."""
    try:
        from fhir.resources.R4B import get_fhir_model_class
        from pydantic import ValidationError
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise UnsupportedFormatError(
            "validating FHIR needs the 'fhir.resources' package",
            field="fhir.resources",
            hint="Install it with: pip install 'meddx[records]', or read with validate='off'",
        ) from exc

    rtype = resource.get("resourceType")
    try:
        model = get_fhir_model_class(str(rtype))
    except ValueError:
        return [("resourceType", f"{rtype!r} is not an R4B resource type")]
    body = resource
    if rtype == "Bundle":  # entries are validated one by one
        body = dict(resource)
        entries = resource.get("entry", [])
        body["entry"] = [
            {k: v for k, v in e.items() if k != "resource"} if isinstance(e, dict) else e
            for e in (entries if isinstance(entries, list) else [])
        ]
    body, issues = _primitive_extension_issues(body)
    try:
        model.model_validate(body)
    except ValidationError as exc:
        issues += [
            (".".join(str(p) for p in err.get("loc", ())) or "(resource)", str(err.get("msg", "")))
            for err in exc.errors()
        ]
    except (AttributeError, TypeError, ValueError, KeyError, IndexError, OverflowError) as exc:
        # a validator of the models failed on a shape it did not expect
        issues.append(("(resource)", f"the R4B model could not check it: {type(exc).__name__}: {exc}"))
    return issues


def _pick_coding(concept: Any) -> dict[str, Any]:
    """The LOINC coding of a CodeableConcept if any, else its first coding."""
    if not isinstance(concept, dict):
        return {}
    codings = [c for c in concept.get("coding", []) or [] if isinstance(c, dict)]
    for coding in codings:
        if coding.get("system") == LOINC:
            return coding
    return codings[0] if codings else {}


def _concept_text(concept: Any) -> str | None:
    if not isinstance(concept, dict):
        return None
    coding = _pick_coding(concept)
    return concept.get("text") or coding.get("display") or coding.get("code")


def _as_float(path: Path, value: Any, where: str) -> float:
    """A FHIR number as float: a JSON number, or a string in FHIR decimal syntax; anything else raises."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidValueError(
            f"{where} is {value!r}, not a number", path=path, field=where, hint="FHIR decimals are JSON numbers"
        )
    if isinstance(value, str) and not _DECIMAL.match(value.strip()):
        raise InvalidValueError(
            f"{where} is the text {value!r}, not a FHIR decimal (nan, inf, 1_000 or hex are not numbers)",
            path=path,
            field=where,
            hint="FHIR decimals are JSON numbers such as 1000 or 5.25; fix the value at the source",
        )
    try:
        number = float(value)
    except (ValueError, OverflowError):
        number = math.nan if isinstance(value, str) else math.inf
    if not math.isfinite(number):
        raise InvalidValueError(
            f"{where} is not a finite number ({str(value)[:40]!r})",
            path=path,
            field=where,
            hint="NaN, Infinity and numbers beyond 1e308 are not FHIR decimals; fix the value at the source",
        )
    return number


def _value_columns(path: Path, element: dict[str, Any], where: str) -> dict[str, Any]:
    """``value``, ``value_string`` and ``unit`` of an Observation (or component) ``value[x]``."""
    out: dict[str, Any] = {"value": math.nan, "value_string": None, "unit": None}
    if "valueQuantity" in element:
        quantity = element["valueQuantity"]
        if not isinstance(quantity, dict):
            raise InvalidValueError(
                "valueQuantity is not an object", path=path, field=f"{where}.valueQuantity"
            )
        if quantity.get("value") is not None:
            out["value"] = _as_float(path, quantity["value"], f"{where}.valueQuantity.value")
        out["unit"] = quantity.get("unit") or quantity.get("code")
        if quantity.get("comparator"):
            out["value_string"] = f"{quantity['comparator']}{quantity.get('value')}"
    elif "valueInteger" in element:
        out["value"] = _as_float(path, element["valueInteger"], f"{where}.valueInteger")
    elif "valueDecimal" in element:
        out["value"] = _as_float(path, element["valueDecimal"], f"{where}.valueDecimal")
    elif "valueCodeableConcept" in element:
        out["value_string"] = _concept_text(element["valueCodeableConcept"])
    elif "valueBoolean" in element:
        out["value_string"] = str(element["valueBoolean"]).lower()
    else:
        for key in ("valueString", "valueDateTime", "valueTime", "valuePeriod", "valueRange", "valueRatio"):
            if key in element:
                value = element[key]
                out["value_string"] = value if isinstance(value, str) else json.dumps(value)
                break
    return out


def _reference_id(reference: Any, by_url: dict[str, str]) -> str | None:
    """``Patient/abc`` -> ``abc``; ``urn:uuid:...`` resolved through the bundle's fullUrls."""
    if not isinstance(reference, dict):
        return None
    ref = reference.get("reference")
    if not isinstance(ref, str):
        identifier = reference.get("identifier")
        return identifier.get("value") if isinstance(identifier, dict) else None
    if ref in by_url:
        return by_url[ref]
    ref = ref.split("/_history/")[0].rstrip("/")
    return ref.split("/")[-1] if "/" in ref else ref


def _patient_row(resource: dict[str, Any]) -> dict[str, Any]:
    names = [n for n in resource.get("name", []) or [] if isinstance(n, dict)]
    official = next((n for n in names if n.get("use") == "official"), names[0] if names else {})
    given = official.get("given") or []
    return {
        "id": resource.get("id"),
        "family": official.get("family"),
        "given": " ".join(str(g) for g in given) if isinstance(given, list) and given else None,
        "sex": resource.get("gender"),
        "birth_date": resource.get("birthDate"),
    }


def _observation_rows(
    path: Path, resource: dict[str, Any], by_url: dict[str, str]
) -> list[dict[str, Any]]:
    name = _resource_name(resource)
    subject = resource.get("subject")
    period = resource.get("effectivePeriod")
    time = (
        resource.get("effectiveDateTime")
        or resource.get("effectiveInstant")
        or (period.get("start") if isinstance(period, dict) else None)
        or resource.get("issued")
    )
    common = {
        "patient_id": _reference_id(subject, by_url),
        "time": time,
        "status": resource.get("status"),
        "id": resource.get("id"),
    }

    def row(element: dict[str, Any], where: str) -> dict[str, Any]:
        coding = _pick_coding(element.get("code"))
        concept = element.get("code") if isinstance(element.get("code"), dict) else {}
        return {
            **common,
            "code": coding.get("code"),
            "system": coding.get("system"),
            "display": coding.get("display") or concept.get("text"),
            **_value_columns(path, element, where),
        }

    components = [c for c in resource.get("component", []) or [] if isinstance(c, dict)]
    rows = []
    has_value = any(k.startswith("value") for k in resource)
    if has_value or not components:
        rows.append(row(resource, name))
    for i, component in enumerate(components):
        rows.append(row(component, f"{name}.component[{i}]"))
    return rows


@register_reader
class FhirReader(Reader):
    """Reads a FHIR JSON Bundle or resource into a :class:`RecordSample`.

    Options:
        validate: ``"warn"`` (default), ``"strict"`` or ``"off"`` (see module doc).
        max_bytes: largest file accepted (default 256 MiB).
        max_depth: deepest JSON nesting accepted (default 64).
    """

    name = "fhir"
    suffixes = (".json", ".fhir")

    def sniff(self, path: Path, head: bytes) -> bool:
        text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
        return text.startswith(b"{") and b'"resourceType"' in text

    def read(self, path: Path, **options: Any) -> RecordSample:
        unknown = set(options) - _OPTIONS
        if unknown:
            raise ConfigError(
                f"unknown option(s) for the fhir reader: {', '.join(sorted(unknown))}",
                path=path,
                field=sorted(unknown)[0],
                hint=f"Valid options: {', '.join(sorted(_OPTIONS))}",
            )
        mode = options.get("validate", "warn")
        if mode not in _VALIDATE_MODES:
            raise ConfigError(
                f"validate must be one of {', '.join(_VALIDATE_MODES)}, not {mode!r}",
                path=path,
                field="validate",
            )
        max_bytes = int(options.get("max_bytes", MAX_BYTES))
        max_depth = int(options.get("max_depth", MAX_DEPTH))

        document = self._load_json(path, max_bytes, max_depth)
        if not isinstance(document, dict) or not isinstance(document.get("resourceType"), str):
            raise UnsupportedFormatError(
                "JSON without a top-level resourceType is not FHIR",
                path=path,
                field="resourceType",
                hint="A FHIR file holds a resource or a Bundle: {\"resourceType\": ...}",
            )

        resources = list(_iter_resources(path, document))
        by_url: dict[str, str] = {}
        for resource, full_url in resources:
            if full_url and isinstance(resource.get("id"), str):
                by_url[full_url] = resource["id"]

        issues: list[str] = []
        n_issues = 0
        if mode != "off":
            checked = [document] if document.get("resourceType") == "Bundle" else []
            for resource in checked + [r for r, _ in resources]:
                for loc, message in _validation_issues(resource):
                    n_issues += 1
                    name = _resource_name(resource)
                    if mode == "strict":
                        raise InvalidValueError(
                            f"{name} fails FHIR {FHIR_MODELS} validation at {loc}: {message}",
                            path=path,
                            field=f"{resource.get('resourceType')}.{loc}",
                            hint="Fix the resource, or read with validate='warn' to keep going",
                        )
                    if len(issues) < MAX_ISSUES:
                        issues.append(f"{name}: {loc}: {message}")

        patients: list[dict[str, Any]] = []
        observations: list[dict[str, Any]] = []
        for resource, _ in resources:
            rtype = resource.get("resourceType")
            if rtype == "Patient":
                patients.append(_patient_row(resource))
            elif rtype == "Observation":
                observations.extend(_observation_rows(path, resource, by_url))

        counts = Counter(str(r.get("resourceType")) for r, _ in resources)
        if not resources:
            raise EmptyDataError(
                "the Bundle holds no resources", path=path, field="Bundle.entry"
            )
        patient_ids = {p["id"] for p in patients if p.get("id")}
        meta: dict[str, Any] = {
            "resource_type": document["resourceType"],
            "bundle_type": document.get("type") if document["resourceType"] == "Bundle" else None,
            "fhir_models": FHIR_MODELS,
            "validate": mode,
            "n_validation_issues": n_issues,
            "validation_issues": issues,
        }
        return RecordSample(
            path=path,
            format=self.name,
            patient_id=next(iter(patient_ids)) if len(patient_ids) == 1 else None,
            study_id=document.get("id") if isinstance(document.get("id"), str) else None,
            meta=meta,
            patients=make_frame(patients, PATIENT_COLUMNS),
            observations=make_frame(observations, OBSERVATION_COLUMNS),
            resources=dict(counts),
        )

    @staticmethod
    def _load_json(path: Path, max_bytes: int, max_depth: int) -> Any:
        raw = read_bounded(path, max_bytes, hint="Pass max_bytes= to read a larger file, or split the Bundle")
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise CorruptFileError(
                f"not UTF-8 text ({exc.reason} at byte {exc.start})",
                path=path,
                hint="FHIR JSON must be UTF-8",
                field="encoding",
            ) from exc
        try:
            document = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CorruptFileError(
                f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}",
                path=path,
                hint="The file is truncated or not JSON",
                field=f"JSON syntax at line {exc.lineno} column {exc.colno}",
            ) from exc
        except RecursionError as exc:
            raise CorruptFileError(
                "JSON is nested too deeply to parse", path=path, hint="The file is probably corrupt",
                field="max_depth",
            ) from exc
        except ValueError as exc:  # e.g. integers longer than Python's digit limit
            raise CorruptFileError(f"invalid JSON: {exc}", path=path, field="JSON syntax") from exc
        if _max_depth_exceeds(document, max_depth):
            raise CorruptFileError(
                f"JSON nests deeper than {max_depth} levels",
                path=path,
                field="max_depth",
                hint="Real FHIR resources are far shallower; pass max_depth= if this file is genuine",
            )
        return document


__all__ = ["FhirReader", "OBSERVATION_COLUMNS", "PATIENT_COLUMNS", "make_frame"]
