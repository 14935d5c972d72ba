"""``meddx predict``: class probabilities for image files, as JSON.

Kept light on purpose: typer at import, torch only once the model is built, so a
cold ``meddx predict`` on one PNG or DICOM answers in well under 3 seconds.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import typer


def _skip_final_gc() -> None:
    """In the ``meddx`` process itself, skip the garbage collector's last full sweep.

    After torch is loaded, the interpreter's exit walks every object torch made and
    takes about half a second; :func:`gc.freeze` moves them out of the collector's
    reach. Done only when ``meddx`` is the program (not when a test or a notebook
    calls :func:`meddx.cli.main`), where nothing runs after the command anyway.
    """
    if Path(sys.argv[0]).stem in ("meddx", "meddx-script"):
        import gc

        gc.freeze()


def predict(
    model: str = typer.Argument(..., help="A run folder / package path, or a registered NAME[:VERSION]."),
    files: list[Path] = typer.Argument(
        ..., help="Images (DICOM, PNG/JPEG, NIfTI); signals (WFDB .hea/.dat, EDF); records (CSV rows, FHIR "
        "R4 bundles, HL7 v2 ORU) - whatever the model's modality takes."),
    slice_index: int = typer.Option(None, "--slice", help="Slice of a 3-D volume to use."),
    uncertainty: str = typer.Option(
        "auto", help="auto (the package's own: ensemble, bayes or none) | none | mc-dropout | bayes | tta | ensemble."),
    samples: int = typer.Option(20, help="Draws for mc-dropout, bayes and tta."),
    explain: str = typer.Option(None, help="Add a saliency map: gradcam | gradcam++ | scorecam."),
    explain_dir: Path = typer.Option(Path("."), help="Folder for the explanation overlay PNGs."),
    fhir: bool = typer.Option(False, "--fhir", help="Record models: print FHIR R4 RiskAssessment resources."),
    subject: str = typer.Option(None, help="With --fhir: the Patient id the RiskAssessment is about."),
) -> None:
    """Predict for files; print the prediction schema as JSON (one object, or a list for several files).

    Each result holds raw and calibrated probabilities, uncertainty, the conformal
    prediction set, a positive/negative/refer decision with its reason and the model version.
    """
    import json

    from meddx.modalities import call, handler_for_package
    from meddx.packaging.registry import read_package, resolve

    folder = resolve(model)
    package = read_package(folder)
    handler = handler_for_package(package)
    options = {k: v for k, v in {"slice_index": slice_index, "uncertainty": uncertainty, "samples": samples,
                                 "explain": explain, "explain_dir": explain_dir}.items() if v != _DEFAULTS[k]}
    module = handler.handler()
    writer = _fhir_writer(module, handler.name) if fhir else None
    results = call(module.predict, folder, package, [str(f) for f in files], what=f"{handler.name} {handler.task}",
                   **options)
    if writer is not None:
        results = writer(results, subject)
    typer.echo(json.dumps(results if len(results) > 1 else results[0], indent=2))
    _skip_final_gc()


_DEFAULTS = {"slice_index": None, "uncertainty": "auto", "samples": 20, "explain": None, "explain_dir": Path(".")}


def _fhir_writer(module: object, modality: str) -> Callable[[list[dict], str | None], list[dict]]:
    """The handler's writer of predictions as FHIR resources (record models: RiskAssessment)."""
    from meddx.exceptions import ConfigError

    writer = getattr(module, "fhir", None)
    if writer is None:
        raise ConfigError(f"--fhir writes RiskAssessments for record models, not {modality} models", field="fhir",
                          hint="For images use the service's /api/results/{id}/fhir (DiagnosticReport)")
    return writer
