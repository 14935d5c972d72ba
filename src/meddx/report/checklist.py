"""Reporting-guideline checklist for a validation report: TRIPOD+AI and CLAIM 2024.

The checklist tells a reviewer which reporting items the HTML validation report
covers, which section covers each one, and which items only the authors can
report (ethics approval, funding, registration, ...). It is not a substitute for
the guidelines themselves: item texts here are short paraphrases, and a manuscript
must still be checked against the official checklists.

Guidelines:

* **TRIPOD+AI** - Collins GS, Moons KGM, Dhiman P, et al. TRIPOD+AI statement:
  updated guidance for reporting clinical prediction models that use regression or
  machine learning methods. *BMJ* 2024;385:e078378. 27 items (52 sub-items).
* **CLAIM 2024** - Tejani AS, Klontzas ME, Gatti AA, et al. Checklist for Artificial
  Intelligence in Medical Imaging (CLAIM): 2024 Update. *Radiol Artif Intell*
  2024;6(4):e240300. 44 items.

Only the items relevant to the *validation of a diagnostic imaging model* are
listed: 19 TRIPOD+AI items and 20 of CLAIM's 44. Each has a rule: a function of the report dict that says
whether the report covers the item, and a note that says what is shown or what
is missing. Items the tool can never cover have no rule and are always
``"not covered"`` with the note "for the authors to report".

Use :func:`build_checklist`; :func:`section_present` is the shared notion of a
section being "present and non-empty" that the HTML renderer uses too.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

COVERED = "covered"
NOT_COVERED = "not covered"
AUTHORS = "for the authors to report"

#: Section ids of the HTML report, in page order, with their headings.
SECTIONS: tuple[tuple[str, str], ...] = (
    ("model", "Model"),
    ("data", "Data"),
    ("performance", "Performance"),
    ("calibration", "Calibration"),
    ("operating-points", "Operating points"),
    ("subgroups", "Subgroups"),
    ("uncertainty", "Uncertainty"),
    ("explanations", "Explanations"),
    ("model-card", "Model card"),
    ("checklist", "Reporting checklist"),
    ("warnings", "Warnings"),
)
SECTION_IDS = tuple(sid for sid, _ in SECTIONS)


def nonempty(value: Any) -> bool:
    """True for a value that carries information: not None/NaN/blank, not an empty container.

    A mapping or list counts as non-empty when at least one of its values does
    (``{"n": None}`` is empty). ``False`` and ``0`` are information.
    """
    if value is None:
        return False
    if isinstance(value, float):
        return not math.isnan(value)
    if isinstance(value, str):
        return bool(value.strip())
    if isinstance(value, Mapping):
        return any(nonempty(v) for v in value.values())
    if isinstance(value, (list, tuple, set)):
        return any(nonempty(v) for v in value)
    return True


def _get(report: Mapping[str, Any], *keys: str) -> Any:
    """``report[k1][k2]...`` or None when any level is absent or not a mapping."""
    value: Any = report
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def section_present(report: Mapping[str, Any], section: str) -> bool:
    """Whether the report holds content for the section with this id."""
    if section == "model":
        return nonempty(report.get("model"))
    if section == "data":
        return nonempty(report.get("data"))
    if section == "performance":
        return nonempty(_get(report, "evaluation", "metrics"))
    if section == "calibration":
        return nonempty(report.get("calibration")) or nonempty(report.get("local_recalibration"))
    if section == "operating-points":
        return nonempty(report.get("operating_points"))
    if section == "subgroups":
        return any(nonempty(s.get("rows")) for s in report.get("subgroups") or [] if isinstance(s, Mapping))
    if section == "uncertainty":
        return nonempty(report.get("uncertainty"))
    if section == "explanations":
        return nonempty(report.get("explanations"))
    if section == "model-card":
        return nonempty(_get(report, "model", "card_markdown"))
    if section in ("checklist", "warnings"):
        return True  # always rendered: the checklist is built here, "no warnings" is a statement too
    raise KeyError(f"unknown report section {section!r}; known: {', '.join(SECTION_IDS)}")


def _has_ci(metric: Any) -> bool:
    return isinstance(metric, Mapping) and nonempty(metric.get("low")) and nonempty(metric.get("high"))


# --- rules: report -> (covered?, note) ---------------------------------------------------------

Rule = Callable[[Mapping[str, Any]], "tuple[bool, str]"]


def _intended_use(r: Mapping[str, Any]) -> tuple[bool, str]:
    if nonempty(_get(r, "model", "intended_use")):
        return True, "Intended use stated, with the 'not for primary diagnosis' statement."
    return False, "model.intended_use is missing; the generic 'not for primary diagnosis' banner is shown only."


def _data_source(r: Mapping[str, Any]) -> tuple[bool, str]:
    data = r.get("data") or {}
    found = [k for k in ("dataset", "source", "licence", "description") if nonempty(data.get(k))]
    if nonempty(data.get("dataset")) or nonempty(data.get("source")):
        return True, f"Data set named ({', '.join(found)}); dates and setting of data collection for the authors."
    return False, "Neither data.dataset nor data.source is given."


def _preprocessing(r: Mapping[str, Any]) -> tuple[bool, str]:
    card = str(_get(r, "model", "card_markdown") or "")
    if "preprocess" in card.lower():
        return True, "Preprocessing is described in the model card; quality checks for the authors."
    return False, "No model card with a preprocessing section is included."


def _partitions(r: Mapping[str, Any]) -> tuple[bool, str]:
    splits = _get(r, "data", "splits")
    if nonempty(splits):
        note = f"Partitions {', '.join(map(str, splits))} with their sizes"
        if nonempty(_get(r, "data", "split_note")):
            note += " and how they were made"
        return True, note + "."
    return False, "data.splits is missing."


def _disjoint_level(r: Mapping[str, Any]) -> tuple[bool, str]:
    grouped = _get(r, "data", "grouped")
    if grouped is True:
        return True, "Partitions are disjoint by patient (grouped split)."
    if grouped is False:
        return True, "Partitions are NOT disjoint by patient (image-level split): state why this is acceptable."
    return False, "data.grouped is not given: whether one patient's images can fall in several partitions is unknown."


def _model_description(r: Mapping[str, Any]) -> tuple[bool, str]:
    if nonempty(_get(r, "model", "architecture")):
        return True, "Architecture named; training details are in the model card and the training run."
    return False, "model.architecture is missing."


def _metrics(r: Mapping[str, Any]) -> tuple[bool, str]:
    metrics = _get(r, "evaluation", "metrics") or {}
    if not nonempty(metrics):
        return False, "No performance metrics."
    defined = {k: v for k, v in metrics.items() if nonempty(v.get("value") if isinstance(v, Mapping) else v)}
    lacking = [k for k, v in defined.items() if not _has_ci(v)]
    if defined and not lacking:
        return True, f"{len(defined)} metrics, each with a 95% confidence interval."
    return False, f"Metrics without a confidence interval: {', '.join(lacking) or 'all'}."


def _discrimination_and_calibration(r: Mapping[str, Any]) -> tuple[bool, str]:
    has_perf = section_present(r, "performance")
    has_cal = nonempty(r.get("calibration"))
    if has_perf and has_cal:
        return True, "Discrimination and calibration measures, with plots where supplied."
    missing = [name for name, ok in (("discrimination", has_perf), ("calibration", has_cal)) if not ok]
    return False, f"Missing: {' and '.join(missing)} measures; clinical utility (e.g. decision curves) for the authors."


def _updating_methods(r: Mapping[str, Any]) -> tuple[bool, str]:
    if nonempty(_get(r, "calibration", "method")) or nonempty(r.get("local_recalibration")):
        return True, "Recalibration method and the data it was fitted on are described."
    return False, "No recalibration or other model updating is reported."


def _updating_results(r: Mapping[str, Any]) -> tuple[bool, str]:
    cal_after = nonempty(_get(r, "calibration", "after"))
    local_after = nonempty(_get(r, "local_recalibration", "after"))
    if cal_after or local_after:
        return True, "Performance before and after recalibration is shown."
    return False, "No results after model updating (calibration.after / local_recalibration.after)."


def _subgroups(r: Mapping[str, Any]) -> tuple[bool, str]:
    if section_present(r, "subgroups"):
        attrs = [str(s.get("attribute")) for s in r.get("subgroups") or [] if isinstance(s, Mapping)]
        return True, f"Performance by {', '.join(attrs)}; mitigation of any unfairness for the authors."
    return False, "No subgroup (e.g. sex, age, site) results."


def _output_and_thresholds(r: Mapping[str, Any]) -> tuple[bool, str]:
    ops = section_present(r, "operating-points")
    unc = section_present(r, "uncertainty")
    if ops:
        extra = "; abstention and prediction sets in Uncertainty" if unc else ""
        return True, "Thresholds, what they were chosen for and on which split" + extra + "."
    return False, "No operating points: how the decision threshold was chosen is not reported."


def _flow(r: Mapping[str, Any]) -> tuple[bool, str]:
    splits = _get(r, "data", "splits") or {}
    with_classes = isinstance(splits, Mapping) and splits and all(
        isinstance(s, Mapping) and nonempty(s.get("classes")) for s in splits.values())
    if with_classes:
        return True, "Numbers per partition and per class are given; exclusions for the authors."
    if nonempty(splits):
        return False, "Partition sizes are given but not the number with and without the outcome (classes)."
    return False, "data.splits is missing."


def _model_access(r: Mapping[str, Any]) -> tuple[bool, str]:
    named = nonempty(_get(r, "model", "name")) and nonempty(_get(r, "model", "version"))
    if named and section_present(r, "model-card"):
        return True, "Model name, version and model card; where to obtain the model for the authors."
    return False, "Model name/version or model card missing."


def _performance_with_subgroups(r: Mapping[str, Any]) -> tuple[bool, str]:
    ok, note = _metrics(r)
    if not ok:
        return ok, note
    if not section_present(r, "subgroups"):
        return False, "Overall estimates have CIs, but no key subgroups are reported."
    return True, "Overall and subgroup estimates with 95% confidence intervals, with plots."


def _limitations(r: Mapping[str, Any]) -> tuple[bool, str]:
    if nonempty(_get(r, "model", "limitations")):
        return True, "Known limitations listed; discussion of their effect for the authors."
    return False, "model.limitations is empty."


def _explainability(r: Mapping[str, Any]) -> tuple[bool, str]:
    items = [e for e in r.get("explanations") or [] if isinstance(e, Mapping)]
    if not items:
        return False, "No explanation maps."
    checked = [e for e in items if nonempty(e.get("sanity_spearman")) or nonempty(e.get("deletion_auc"))]
    if checked:
        return True, "Saliency maps with their method, and their validation (randomisation sanity check, deletion)."
    return False, "Saliency maps are shown but their validation (sanity check, deletion/insertion) is not."


def _internal_test(r: Mapping[str, Any]) -> tuple[bool, str]:
    split = _get(r, "evaluation", "split")
    if nonempty(_get(r, "evaluation", "metrics")) and nonempty(split):
        return True, f"Evaluated on the held-out '{split}' partition."
    return False, "evaluation.split is not given: on which data the metrics were measured is unknown."


def _external_test(r: Mapping[str, Any]) -> tuple[bool, str]:
    if _get(r, "evaluation", "external") is True:
        return True, "The evaluation data come from a different source than the training data."
    if nonempty(r.get("local_recalibration")):
        n = _get(r, "local_recalibration", "n_local")
        return True, f"Performance on local data (n={n}) is reported."
    return False, "No external test set (evaluation.external is not true, no local evaluation)."


def _characteristics(r: Mapping[str, Any]) -> tuple[bool, str]:
    if section_present(r, "subgroups"):
        return True, "Subgroup sizes and prevalence in the test partition; other partitions for the authors."
    return False, "No demographic or clinical characteristics (subgroups) are reported."


def _diagnostic_estimates(r: Mapping[str, Any]) -> tuple[bool, str]:
    ops = [o for o in r.get("operating_points") or [] if isinstance(o, Mapping)]
    if ops and all(_has_ci(o.get("sensitivity")) and _has_ci(o.get("specificity")) for o in ops):
        return True, "Sensitivity, specificity, PPV and NPV with 95% CIs at each operating point."
    metrics = _get(r, "evaluation", "metrics") or {}
    if _has_ci(metrics.get("sensitivity")) and _has_ci(metrics.get("specificity")):
        return True, "Sensitivity and specificity with 95% CIs at the default threshold."
    return False, "No sensitivity/specificity with confidence intervals."


@dataclass(frozen=True)
class Item:
    """One checklist item: guideline, item number, paraphrased text, section ids, rule (None: authors only)."""

    guideline: str
    item: str
    text: str
    sections: tuple[str, ...] = ()
    rule: Rule | None = None


TRIPOD = "TRIPOD+AI"
CLAIM = "CLAIM 2024"

ITEMS: tuple[Item, ...] = (
    # --- TRIPOD+AI (Collins et al., BMJ 2024) ---
    Item(TRIPOD, "3b", "Target population, intended purpose in the care pathway, and intended users.",
         ("model",), _intended_use),
    Item(TRIPOD, "5a", "Sources of data for development and evaluation, and their representativeness.",
         ("data",), _data_source),
    Item(TRIPOD, "7", "Data pre-processing and quality checking.", ("model-card",), _preprocessing),
    Item(TRIPOD, "10", "How the study size was arrived at and why it is sufficient."),
    Item(TRIPOD, "12a", "How the data were used (development, evaluation), including partitioning.",
         ("data",), _partitions),
    Item(TRIPOD, "12c", "Type of model, model-building steps, hyperparameter tuning, internal validation.",
         ("model", "model-card"), _model_description),
    Item(TRIPOD, "12e", "Measures and plots used to evaluate performance (discrimination, calibration, utility).",
         ("performance", "calibration"), _discrimination_and_calibration),
    Item(TRIPOD, "12f", "Any model updating (e.g. recalibration) arising from the evaluation.",
         ("calibration",), _updating_methods),
    Item(TRIPOD, "14", "Approaches used to address model fairness.", ("subgroups",), _subgroups),
    Item(TRIPOD, "15", "Model output (probabilities, classification) and how thresholds were identified.",
         ("operating-points", "uncertainty"), _output_and_thresholds),
    Item(TRIPOD, "17", "Ethics committee approval and informed consent (or waiver)."),
    Item(TRIPOD, "18a", "Funding source and role of the funders."),
    Item(TRIPOD, "18d", "Study registration (register and number) or a statement that it was not registered."),
    Item(TRIPOD, "19", "Patient and public involvement, or a statement of no involvement."),
    Item(TRIPOD, "20a", "Flow of participants, with numbers with and without the outcome.", ("data",), _flow),
    Item(TRIPOD, "22", "Details of the full model (code, object, API) and any restrictions to access or re-use.",
         ("model", "model-card"), _model_access),
    Item(TRIPOD, "23a", "Performance estimates with confidence intervals, including for key subgroups.",
         ("performance", "subgroups"), _performance_with_subgroups),
    Item(TRIPOD, "24", "Results of any model updating, including subsequent performance.",
         ("calibration",), _updating_results),
    Item(TRIPOD, "26", "Limitations (sample, overfitting, missing data) and their effect on bias and generalisability.",
         ("model", "warnings"), _limitations),
    # --- CLAIM 2024 update (Tejani et al., Radiol Artif Intell 2024) ---
    Item(CLAIM, "3", "Scientific and clinical background, including the intended use and role of the AI approach.",
         ("model",), _intended_use),
    Item(CLAIM, "7", "Data sources, with links where available, and alignment with the intended use.",
         ("data",), _data_source),
    Item(CLAIM, "9", "Data preprocessing steps.", ("model-card",), _preprocessing),
    Item(CLAIM, "14", "Definition of the method used to obtain the reference standard."),
    Item(CLAIM, "16", "Source of reference-standard annotations and the annotators' qualifications."),
    Item(CLAIM, "19", "How data were assigned to partitions, with their proportions.", ("data",), _partitions),
    Item(CLAIM, "20", "Level at which partitions are disjoint (patient, study, image).", ("data",), _disjoint_level),
    Item(CLAIM, "22", "Detailed description of the model.", ("model", "model-card"), _model_description),
    Item(CLAIM, "29", "Statistical measures of significance and uncertainty (e.g. confidence intervals).",
         ("performance",), _metrics),
    Item(CLAIM, "31", "Explainability or interpretability methods, and how they were validated.",
         ("explanations",), _explainability),
    Item(CLAIM, "32", "Evaluation on internal data (held-out test partition).", ("performance",), _internal_test),
    Item(CLAIM, "33", "Testing on external data from other institutions.", ("performance", "calibration"),
         _external_test),
    Item(CLAIM, "34", "Clinical trial registration number and registry, where applicable."),
    Item(CLAIM, "35", "Numbers of patients or examinations included and excluded (flow diagram).",
         ("data",), _flow),
    Item(CLAIM, "36", "Demographic and clinical characteristics of cases in each partition.",
         ("subgroups",), _characteristics),
    Item(CLAIM, "37", "Performance metrics with measures of statistical uncertainty.", ("performance",), _metrics),
    Item(CLAIM, "38", "Estimates of diagnostic performance (sensitivity, specificity, ...) and their precision.",
         ("operating-points", "performance"), _diagnostic_estimates),
    Item(CLAIM, "39", "Failure analysis of incorrectly classified cases."),
    Item(CLAIM, "40", "Study limitations, including potential bias and generalisability.",
         ("model", "warnings"), _limitations),
    Item(CLAIM, "44", "Sources of funding and other support; role of the funders."),
)


def build_checklist(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The checklist for one report dict (see :mod:`meddx.report.html` for the schema).

    Returns one dict per item, in guideline order::

        {"guideline": "TRIPOD+AI" | "CLAIM 2024", "item": "23a", "text": "...",
         "section": "performance" | None,     # the first section that covers it (link target)
         "sections": ["performance", "subgroups"],
         "status": "covered" | "not covered",
         "scope": "report" | "authors",       # authors: the tool can never cover it
         "note": "what the report shows, or what is missing"}
    """
    rows = []
    for item in ITEMS:
        if item.rule is None:
            covered, note, scope = False, AUTHORS, "authors"
        else:
            try:
                covered, note = item.rule(report)
            except (TypeError, AttributeError, ValueError) as exc:  # a malformed section is "not covered"
                covered, note = False, f"section could not be read ({type(exc).__name__}: {exc})"
            scope = "report"
        rows.append({
            "guideline": item.guideline,
            "item": item.item,
            "text": item.text,
            "section": item.sections[0] if item.sections else None,
            "sections": list(item.sections),
            "status": COVERED if covered else NOT_COVERED,
            "scope": scope,
            "note": note,
        })
    return rows


__all__ = [
    "AUTHORS",
    "COVERED",
    "ITEMS",
    "NOT_COVERED",
    "SECTIONS",
    "SECTION_IDS",
    "build_checklist",
    "nonempty",
    "section_present",
]
