"""De-identification of clinical records: FHIR JSON resources and HL7 v2 messages.

Both follow the same rules as the DICOM side (:mod:`meddx.privacy.deid`), with
the same key, so one patient gets one pseudonym everywhere: a Patient's
medical record number, an HL7 PID-3 identifier and a DICOM Patient ID with the
same value all become ``key.pseudonym(value, "patient")``, and their dates move
by the same ``key.date_shift_days(value)``.

FHIR (R4/R4B JSON, a resource or a Bundle, nested bundles and contained
resources included):

* Patient: identifiers -> patient pseudonyms (SSNs dropped), name -> one
  ``anonymous`` name whose text is the pseudonym; telecom, address, photo,
  contact, extensions (mother's maiden name, race, raw HL7 copies) removed;
  birthDate shifted. RelatedPerson, Person, Practitioner: name, telecom,
  address, photo and extensions removed, identifiers pseudonymised;
* every resource: ``id`` -> a keyed pseudonym, and every reference to it
  (``Patient/<id>``, absolute URLs, ``urn:uuid:`` full URLs, ``subject``,
  ``patient`` and the rest) rewritten the same way, so the bundle still
  resolves; the display text of references to persons dropped; identifier
  values (orders, specimens, accession numbers) pseudonymised; narrative
  ``text`` removed; every date, dateTime and instant shifted by the patient's
  offset (the patient a resource refers to, else the bundle's first patient),
  and the primitive extensions of shifted dates (``_birthDate`` ...) removed.

The output still validates against the R4B models (:func:`validate_fhir`).

HL7 v2: the field rules are the data in :data:`HL7_RULES` (PID-2/3/4 -> patient
pseudonym, PID-5 -> the pseudonym as family name, PID-7 and other timestamps
shifted, PID-11/13/14 address and phones and PID-19 SSN emptied, NK1 names,
addresses and phones emptied, guarantor, insured and provider names
removed, order and visit numbers pseudonymised).
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meddx.exceptions import (
    ConfigError,
    CorruptFileError,
    DataFileNotFoundError,
    InvalidValueError,
    UnsupportedFormatError,
)
from meddx.privacy.deid import _atomic_write, _same_file, register_handler
from meddx.privacy.pseudonyms import PseudonymKey, shift_datetime

# -- FHIR ---------------------------------------------------------------------------------
_FHIR_DATE = re.compile(
    r"^\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$"
)
_TS = re.compile(r"^\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,4})?)?)?)?)?)?([+-]\d{4})?$")
"""An HL7 v2 TS / DTM timestamp."""
_DATE_KEYS = frozenset({"date", "issued", "recorded", "authoredOn", "timestamp", "lastUpdated", "created",
                        "start", "end", "occurrenceDateTime", "sent", "received"})
_DATE_SUFFIXES = ("Date", "DateTime", "Instant", "Time")
_REFERENCE = re.compile(
    r"^(?P<base>(?:https?://.*?/)?)(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})"
    r"(?P<history>/_history/[A-Za-z0-9\-.]{1,64})?$"
)
_PERSON_TYPES = frozenset({"Patient", "RelatedPerson", "Person", "Practitioner"})
_IDENTIFIER_KINDS = {"Patient": "patient", "RelatedPerson": "person", "Person": "person",
                     "Practitioner": "practitioner", "PractitionerRole": "practitioner"}
_SSN_SYSTEMS = ("http://hl7.org/fhir/sid/us-ssn", "urn:oid:2.16.840.1.113883.4.1")


@dataclass
class _FhirContext:
    key: PseudonymKey
    patients: dict[str, str]  # "Patient/<id>" or fullUrl -> the patient's original primary identifier
    default_patient: str
    counts: dict[str, int] = field(default_factory=lambda: {"identifiers": 0, "references": 0, "dates_shifted": 0,
                                                             "removed": 0})
    pseudonyms: list[str] = field(default_factory=list)

    def bump(self, name: str, n: int = 1) -> None:
        self.counts[name] += n


def _coding_codes(concept: Any) -> set[str]:
    if not isinstance(concept, dict):
        return set()
    return {str(c.get("code")) for c in concept.get("coding", []) or [] if isinstance(c, dict)}


def _patient_primary(resource: dict[str, Any]) -> str:
    """The value that names a Patient: its MR identifier, else its first identifier, else ``Patient/<id>``."""
    identifiers = [i for i in resource.get("identifier", []) or [] if isinstance(i, dict) and i.get("value")]
    for ident in identifiers:
        if "MR" in _coding_codes(ident.get("type")):
            return str(ident["value"])
    if identifiers:
        return str(identifiers[0]["value"])
    return f"Patient/{resource['id']}" if resource.get("id") else ""


def _ref_key(ref: str) -> str | None:
    """``Patient/123``, ``http://x/fhir/Patient/123/_history/2`` -> ``Patient/123``; else None."""
    match = _REFERENCE.match(ref)
    return f"{match['type']}/{match['id']}" if match else None


def _collect_patients(node: Any, found: dict[str, str], order: list[str]) -> None:
    """Map every way a Patient of the tree can be referenced to its primary identifier."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if item.get("resourceType") == "Bundle":
                for entry in item.get("entry", []) or []:
                    resource = entry.get("resource") if isinstance(entry, dict) else None
                    if isinstance(resource, dict) and resource.get("resourceType") == "Patient":
                        if isinstance(entry.get("fullUrl"), str):
                            found[entry["fullUrl"]] = _patient_primary(resource)
            if item.get("resourceType") == "Patient":
                primary = _patient_primary(item)
                order.append(primary)
                if item.get("id"):
                    found[f"Patient/{item['id']}"] = primary
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, list):
            stack.extend(reversed(item))


def _resource_patient(resource: dict[str, Any], ctx: _FhirContext) -> str:
    if resource.get("resourceType") == "Patient":
        return _patient_primary(resource)
    for name in ("subject", "patient", "beneficiary", "individual"):
        ref = resource.get(name)
        ref = ref.get("reference") if isinstance(ref, dict) else None
        if isinstance(ref, str):
            if ref in ctx.patients:
                return ctx.patients[ref]
            key = _ref_key(ref)
            if key and key.startswith("Patient/"):
                return ctx.patients.get(key, key)
    return ctx.default_patient


def _new_id(ctx: _FhirContext, rtype: str, rid: str) -> str:
    return ctx.key.pseudonym(f"{rtype}/{rid}", "resource")


def _rewrite_reference(ref: str, ctx: _FhirContext) -> str:
    """A reference with the target's id replaced the way the target's own id is."""
    if ref.startswith("urn:uuid:"):
        ctx.bump("references")
        return "urn:uuid:" + ctx.key.remap_uuid(ref[len("urn:uuid:"):])
    match = _REFERENCE.match(ref)
    if not match:
        return ref  # "#contained", urn:oid:, canonical URLs: kept
    ctx.bump("references")
    return f"{match['base']}{match['type']}/{_new_id(ctx, match['type'], match['id'])}{match['history'] or ''}"


def _is_ssn(ident: dict[str, Any]) -> bool:
    return bool(_coding_codes(ident.get("type")) & {"SS", "SB"}) or ident.get("system") in _SSN_SYSTEMS


def _scrub_identifier(ident: Any, kind: str, ctx: _FhirContext) -> None:
    if isinstance(ident, dict) and isinstance(ident.get("value"), str | int):
        ident["value"] = ctx.key.pseudonym(str(ident["value"]), kind)
        ident.pop("_value", None)
        ctx.bump("identifiers")


_PersonScrubber = Callable[[dict[str, Any], "_FhirContext", str], None]
_PERSON_SCRUBBERS: dict[str, _PersonScrubber] = {}


def _person(*types: str) -> Callable[[_PersonScrubber], _PersonScrubber]:
    """Register what is removed from resources of these types (beyond the generic rules)."""

    def register(func: _PersonScrubber) -> _PersonScrubber:
        for rtype in types:
            _PERSON_SCRUBBERS[rtype] = func
        return func

    return register


_PERSON_FIELDS = ("name", "telecom", "address", "photo", "contact", "extension", "modifierExtension", "_birthDate")


def _drop(resource: dict[str, Any], names: tuple[str, ...], ctx: _FhirContext) -> None:
    for name in names:
        if name in resource:
            del resource[name]
            ctx.bump("removed")


@_person("Patient")
def _scrub_patient(resource: dict[str, Any], ctx: _FhirContext, primary: str) -> None:
    _drop(resource, _PERSON_FIELDS, ctx)
    pseudonym = ctx.key.pseudonym(primary, "patient")
    resource["name"] = [{"use": "anonymous", "text": pseudonym}]
    ctx.pseudonyms.append(pseudonym)


@_person("RelatedPerson", "Person", "Practitioner")
def _scrub_person(resource: dict[str, Any], ctx: _FhirContext, primary: str) -> None:
    _drop(resource, _PERSON_FIELDS, ctx)


@_person("PractitionerRole")
def _scrub_role(resource: dict[str, Any], ctx: _FhirContext, primary: str) -> None:
    _drop(resource, ("telecom", "extension"), ctx)


def _is_date_key(name: str) -> bool:
    return name in _DATE_KEYS or name.endswith(_DATE_SUFFIXES)


def _walk(node: Any, ctx: _FhirContext, days: int, kind: str) -> None:
    """Apply the generic rules (ids of nested resources, references, identifiers, dates) below ``node``."""
    if isinstance(node, list):
        for item in node:
            _walk(item, ctx, days, kind)
        return
    if not isinstance(node, dict):
        return
    if isinstance(node.get("reference"), str):
        target = _ref_key(node["reference"]) or ""
        node["reference"] = _rewrite_reference(node["reference"], ctx)
        if target.split("/")[0] in _PERSON_TYPES or node.get("type") in _PERSON_TYPES:
            node.pop("display", None)
    for name in list(node):
        if name not in node:
            continue  # a primitive extension ("_date") dropped with its shifted date
        value = node[name]
        if name in ("resourceType", "id"):
            continue  # resource ids are remapped by _resource; element ids are local labels
        if name in ("identifier", "valueIdentifier"):
            items = value if isinstance(value, list) else [value]
            if isinstance(value, list):
                kept = [i for i in value if not (isinstance(i, dict) and _is_ssn(i))]
                ctx.bump("removed", len(value) - len(kept))
                node[name] = items = kept
            here = "patient" if node.get("type") == "Patient" else kind  # Reference.identifier of a Patient
            for ident in items:
                _scrub_identifier(ident, here, ctx)
            _walk(items, ctx, days, kind)
        elif name == "contained" and isinstance(value, list):
            for item in value:
                if isinstance(item, dict) and "resourceType" in item:
                    _resource(item, ctx, contained=True)
        elif isinstance(value, dict) and "resourceType" in value:
            _resource(value, ctx)
        elif name == "fullUrl" and isinstance(value, str):
            node[name] = _rewrite_reference(value, ctx)
        elif name == "url" and isinstance(value, str) and "method" in node:
            node[name] = _rewrite_reference(value, ctx)  # Bundle.entry.request.url
        elif name == "valueString" and "url" in node and _TS.match(value) and len(value) >= 8:
            try:  # an extension repeating a raw HL7 timestamp (e.g. MSH.7)
                node[name] = shift_datetime(value, days)
                ctx.bump("dates_shifted")
            except InvalidValueError:
                pass  # digits that are not a date: an identifier, kept
        elif isinstance(value, str) and _is_date_key(name) and _FHIR_DATE.match(value):
            try:
                node[name] = shift_datetime(value, days)
            except InvalidValueError:
                del node[name]
            ctx.bump("dates_shifted")
            node.pop(f"_{name}", None)  # primitive extensions may repeat the true date
        else:
            _walk(value, ctx, days, kind)


def _resource(resource: dict[str, Any], ctx: _FhirContext, *, contained: bool = False) -> None:
    rtype = str(resource.get("resourceType"))
    primary = _resource_patient(resource, ctx)
    days = ctx.key.date_shift_days(primary)
    if "text" in resource:
        del resource["text"]  # the narrative may repeat any identifier
        ctx.bump("removed")
    scrub = _PERSON_SCRUBBERS.get(rtype)
    if scrub is not None:
        scrub(resource, ctx, primary)
    if isinstance(resource.get("id"), str) and not contained:
        resource["id"] = _new_id(ctx, rtype, resource["id"])
    _walk(resource, ctx, days, _IDENTIFIER_KINDS.get(rtype, "identifier"))


def _deidentify_fhir(obj: dict[str, Any], key: PseudonymKey) -> tuple[dict[str, Any], dict[str, Any]]:
    if not isinstance(obj, dict) or not isinstance(obj.get("resourceType"), str):
        raise UnsupportedFormatError("not a FHIR resource (no resourceType)", field="resourceType")
    out = copy.deepcopy(obj)
    patients: dict[str, str] = {}
    order: list[str] = []
    _collect_patients(out, patients, order)
    ctx = _FhirContext(key=key, patients=patients, default_patient=order[0] if order else "")
    _resource(out, ctx)
    report = {"patients": sorted(set(ctx.pseudonyms)), **ctx.counts}
    return out, report


def deidentify_fhir(obj: dict[str, Any], key: PseudonymKey) -> dict[str, Any]:
    """A de-identified copy of a FHIR resource or Bundle (the input is not changed)."""
    return _deidentify_fhir(obj, key)[0]


def _iter_fhir_resources(obj: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    stack = [obj]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("resourceType"), str):
                found.append(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def validate_fhir(obj: dict[str, Any]) -> list[str]:
    """Problems of every resource in ``obj`` against the FHIR R4B models, as ``"Type/id: field: message"``.

    Each resource is validated on its own (a Bundle without its entries' resources).
    """
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    issues: list[str] = []
    for resource in _iter_fhir_resources(obj):
        rtype = resource["resourceType"]
        try:
            model = get_fhir_model_class(rtype)
        except (ValueError, KeyError):
            issues.append(f"{rtype}: not an R4B resource type")
            continue
        body = json.loads(json.dumps(resource))
        if rtype == "Bundle":
            body["entry"] = [{k: v for k, v in e.items() if k != "resource"} for e in body.get("entry", [])]
        try:
            model.model_validate(body)
        except ValidationError as exc:
            for err in exc.errors():
                where = ".".join(str(p) for p in err.get("loc", ())) or "(resource)"
                issues.append(f"{rtype}/{resource.get('id', '?')}: {where}: {err.get('msg', '')}")
    return issues


# -- HL7 v2 ---------------------------------------------------------------------------------
HL7_RULES: dict[str, dict[int, str]] = {
    "MSH": {7: "shift"},
    "EVN": {2: "shift", 3: "shift", 5: "remove", 6: "shift"},
    "PID": {2: "patient_id", 3: "patient_id", 4: "patient_id", 5: "name", 6: "remove", 7: "shift", 9: "remove",
            11: "remove", 12: "remove", 13: "remove", 14: "remove", 18: "account", 19: "remove", 20: "remove",
            21: "identifier", 23: "remove", 29: "shift"},
    "PD1": {4: "remove"},
    "NK1": {2: "remove", 4: "remove", 5: "remove", 6: "remove", 16: "shift", 30: "remove", 31: "remove",
            32: "remove", 33: "identifier", 37: "remove"},
    "MRG": {1: "patient_id", 2: "identifier", 3: "account", 4: "patient_id", 5: "identifier", 6: "identifier",
            7: "remove"},
    "PV1": {7: "remove", 8: "remove", 9: "remove", 17: "remove", 19: "identifier", 44: "shift", 45: "shift",
            50: "identifier", 52: "remove"},
    "GT1": {2: "identifier", 3: "remove", 4: "remove", 5: "remove", 6: "remove", 7: "remove", 8: "shift",
            12: "remove"},
    "IN1": {16: "remove", 18: "shift", 19: "remove", 36: "identifier", 49: "identifier"},
    "ORC": {2: "identifier", 3: "identifier", 4: "identifier", 7: "shift", 9: "shift", 10: "remove",
            11: "remove", 12: "remove", 14: "remove", 15: "shift", 22: "remove", 23: "remove", 24: "remove"},
    "OBR": {2: "identifier", 3: "identifier", 6: "shift", 7: "shift", 8: "shift", 14: "shift", 16: "remove",
            17: "remove", 22: "shift", 27: "shift", 28: "remove", 32: "remove", 33: "remove", 34: "remove",
            35: "remove", 36: "shift"},
    "OBX": {14: "shift", 16: "remove", 19: "shift"},
    "SPM": {2: "identifier", 17: "shift", 18: "shift"},
    "TQ1": {7: "shift", 8: "shift"},
}
"""What happens to each field (by segment and field number): an action of :data:`HL7_ACTIONS`."""


@dataclass
class _Hl7Context:
    key: PseudonymKey
    patient: str  # original primary identifier of the message's patient
    component: str = "^"
    repetition: str = "~"
    subcomponent: str = "&"
    counts: dict[str, int] = field(default_factory=lambda: {"identifiers": 0, "removed": 0, "dates_shifted": 0})

    @property
    def pseudonym(self) -> str:
        return self.key.pseudonym(self.patient, "patient")


_Hl7Action = Callable[[str, _Hl7Context], str]
HL7_ACTIONS: dict[str, _Hl7Action] = {}


def _hl7_action(name: str) -> Callable[[_Hl7Action], _Hl7Action]:
    """Register a field action for :data:`HL7_RULES`."""

    def register(func: _Hl7Action) -> _Hl7Action:
        HL7_ACTIONS[name] = func
        return func

    return register


def _cx(value: str, ctx: _Hl7Context, kind: str) -> str:
    """Each repetition of a CX identifier -> ``pseudonym^^^^type`` (check digits and issuer dropped)."""
    out = []
    for rep in value.split(ctx.repetition):
        comps = rep.split(ctx.component)
        if not comps[0].strip():
            out.append("")
            continue
        type_code = comps[4] if len(comps) > 4 else ""
        new = ctx.component.join([ctx.key.pseudonym(comps[0], kind), "", "", "", type_code]).rstrip(ctx.component)
        out.append(new)
        ctx.counts["identifiers"] += 1
    return ctx.repetition.join(out)


@_hl7_action("patient_id")
def _hl7_patient_id(value: str, ctx: _Hl7Context) -> str:
    return _cx(value, ctx, "patient")


@_hl7_action("identifier")
def _hl7_identifier(value: str, ctx: _Hl7Context) -> str:
    return _cx(value, ctx, "identifier")


@_hl7_action("account")
def _hl7_account(value: str, ctx: _Hl7Context) -> str:
    return _cx(value, ctx, "account")


@_hl7_action("name")
def _hl7_name(value: str, ctx: _Hl7Context) -> str:
    return ctx.pseudonym if value.strip() else value


@_hl7_action("remove")
def _hl7_remove(value: str, ctx: _Hl7Context) -> str:
    if value.strip(ctx.component + ctx.repetition + ctx.subcomponent + " "):
        ctx.counts["removed"] += 1
    return ""




@_hl7_action("shift")
def _hl7_shift(value: str, ctx: _Hl7Context) -> str:
    days = ctx.key.date_shift_days(ctx.patient)

    def piece(text: str) -> str:
        if _TS.match(text) and len(text) >= 6:
            try:
                ctx.counts["dates_shifted"] += 1
                return shift_datetime(text, days)
            except InvalidValueError:
                return ""
        return "" if re.match(r"^\d{6,}", text) else text  # a broken date is not kept

    return ctx.repetition.join(
        ctx.component.join(ctx.subcomponent.join(piece(s) for s in comp.split(ctx.subcomponent))
                           for comp in rep.split(ctx.component))
        for rep in value.split(ctx.repetition)
    )


def _segment_tag(segment: str) -> tuple[str, str]:
    """``(prefix, tag)``: MLLP start bytes or a BOM before the segment id are kept aside."""
    body = segment.lstrip("\x0b\ufeff")
    return segment[: len(segment) - len(body)], body[:3]


def _message_patient(segments: list[str], separator: str, ctx: _Hl7Context) -> str:
    """The original ID of the first PID in ``segments``: PID-3, else PID-2, else PID-4, else PID-5 (the name)."""
    for segment in segments:
        prefix, tag = _segment_tag(segment)
        if tag != "PID":
            continue
        fields = segment[len(prefix):].split(separator)
        for number in (3, 2, 4):
            if len(fields) > number:
                first = fields[number].split(ctx.repetition)[0].split(ctx.component)[0].strip()
                if first:
                    return first
        return fields[5].strip() if len(fields) > 5 else ""  # no identifier: the name, as DICOM does
    return ""


def _deidentify_hl7(text: str, key: PseudonymKey) -> tuple[str, dict[str, Any]]:
    parts = re.split(r"(\r\n|\r|\n)", text)
    segments, breaks = parts[0::2], parts[1::2]
    # group into messages: each MSH starts one
    starts = [i for i, s in enumerate(segments) if _segment_tag(s)[1] == "MSH"]
    if not starts:
        raise UnsupportedFormatError("no MSH segment: not an HL7 v2 message", field="MSH")
    bounds = list(zip([0, *starts[1:]], [*starts[1:], len(segments)], strict=True))
    counts = {"identifiers": 0, "removed": 0, "dates_shifted": 0}
    pseudonyms: list[str] = []
    for begin, end in bounds:
        msh_index = next(i for i in range(begin, end) if _segment_tag(segments[i])[1] == "MSH")
        prefix, _ = _segment_tag(segments[msh_index])
        msh = segments[msh_index][len(prefix):]
        if len(msh) < 8:
            raise CorruptFileError("the MSH segment is too short", field="MSH-2")
        separator, encoding = msh[3], msh[4:8]
        ctx = _Hl7Context(key=key, patient="", component=encoding[0], repetition=encoding[1],
                          subcomponent=encoding[3])
        ctx.patient = _message_patient(segments[begin:end], separator, ctx)
        for i in range(begin, end):
            seg_prefix, tag = _segment_tag(segments[i])
            if tag == "PID":  # each PID names the patient of the segments that follow it
                ctx.patient = _message_patient([segments[i]], separator, ctx)
                pseudonyms.append(ctx.pseudonym)
            rules = HL7_RULES.get(tag)
            if not rules:
                continue
            fields = segments[i][len(seg_prefix):].split(separator)
            offset = 1 if tag == "MSH" else 0  # MSH-1 is the separator itself
            for number, action in rules.items():
                index = number - offset
                if index < len(fields) and fields[index]:
                    fields[index] = HL7_ACTIONS[action](fields[index], ctx)
            segments[i] = seg_prefix + separator.join(fields)
        for name, value in ctx.counts.items():
            counts[name] += value
    out = "".join(s + (breaks[i] if i < len(breaks) else "") for i, s in enumerate(segments))
    return out, {"patients": sorted(set(pseudonyms)), **counts}


def deidentify_hl7(text: str, key: PseudonymKey) -> str:
    """HL7 v2 text (one or more messages) with patient identifiers replaced, removed or shifted.

    Segment separators (``\\r``, ``\\n`` or ``\\r\\n``), delimiters and every
    field not named in :data:`HL7_RULES` are kept as they are.
    """
    return _deidentify_hl7(text, key)[0]


# -- file handlers for deidentify_path ----------------------------------------------------
MAX_RECORD_BYTES = 256 * 1024 * 1024


def _read_text(src: Path) -> tuple[str, str]:
    if not src.is_file():
        raise DataFileNotFoundError("no such file", path=src)
    if src.stat().st_size > MAX_RECORD_BYTES:
        raise InvalidValueError(f"the file is larger than {MAX_RECORD_BYTES} bytes", path=src)
    data = src.read_bytes()
    for encoding in ("utf-8-sig", "latin-1"):
        try:
            return data.decode(encoding), "utf-8" if encoding == "utf-8-sig" else encoding
        except UnicodeDecodeError:
            continue
    raise CorruptFileError("cannot decode the text", path=src)  # pragma: no cover - latin-1 decodes anything


def _sniff_fhir(path: Path, head: bytes) -> bool:
    return path.suffix.lower() == ".json" or head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"{"


def _sniff_hl7(path: Path, head: bytes) -> bool:
    return head.lstrip(b"\xef\xbb\xbf\x0b \t\r\n")[:4] in (b"MSH|", b"FHS|", b"BHS|")


@register_handler("hl7v2", _sniff_hl7)
def deidentify_hl7_file(src: str | os.PathLike[str], dst: str | os.PathLike[str], key: PseudonymKey,
                        **_options: Any) -> dict[str, Any]:
    """De-identify an HL7 v2 file into ``dst`` (atomically; same encoding and line ends)."""
    src, dst = Path(src), Path(dst)
    if _same_file(src, dst):
        raise ConfigError("the output is the input file", path=dst, field="output")
    text, encoding = _read_text(src)
    try:
        out, report = _deidentify_hl7(text, key)
    except (UnsupportedFormatError, CorruptFileError) as exc:
        raise type(exc)(exc.message, path=src, field=exc.field, hint=exc.hint) from None
    _atomic_write(dst, lambda tmp: tmp.write_bytes(out.encode(encoding)))
    return {"format": "hl7v2", **report}


@register_handler("fhir", _sniff_fhir)
def deidentify_fhir_file(src: str | os.PathLike[str], dst: str | os.PathLike[str], key: PseudonymKey,
                         **_options: Any) -> dict[str, Any]:
    """De-identify a FHIR JSON file into ``dst`` (atomically)."""
    src, dst = Path(src), Path(dst)
    if _same_file(src, dst):
        raise ConfigError("the output is the input file", path=dst, field="output")
    text, _ = _read_text(src)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UnsupportedFormatError(f"not JSON (line {exc.lineno})", path=src) from None
    try:
        out, report = _deidentify_fhir(obj, key)
    except UnsupportedFormatError as exc:
        raise UnsupportedFormatError(exc.message, path=src, field=exc.field) from None
    payload = json.dumps(out, indent=2, ensure_ascii=False) + "\n"
    _atomic_write(dst, lambda tmp: tmp.write_text(payload, encoding="utf-8"))
    return {"format": "fhir", **report}


__all__ = [
    "HL7_ACTIONS",
    "HL7_RULES",
    "deidentify_fhir",
    "deidentify_fhir_file",
    "deidentify_hl7",
    "deidentify_hl7_file",
    "validate_fhir",
]
