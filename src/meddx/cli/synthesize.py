"""``meddx synthesize``: restore low-dose images and translate between modalities.

Both verbs take a model package (any restoration or translation model) and files, write the
synthetic images (with their "SYNTHETIC" banner, and a DICOM marked DERIVED for DICOM inputs) and
print the prediction schema as JSON, whose ``synthetic.checks`` hold the hallucination checks.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(help="Synthesise images: low-dose restoration (denoise) and cross-modality translation.",
                  no_args_is_help=True)


def _run(model: str, files: list[Path], task: str, **options: object) -> None:
    from meddx.exceptions import ConfigError
    from meddx.modalities import call, handler_for_package, task_of_package
    from meddx.packaging.registry import read_package, resolve

    folder = resolve(model)
    package = read_package(folder)
    if task_of_package(package) != task:
        raise ConfigError(f"{package.get('name')} is a {task_of_package(package)} model, not a {task} model",
                          path=folder, field="model", hint=f"Give a {task} model package")
    handler = handler_for_package(package)
    given = {k: v for k, v in options.items() if v is not None}
    results = call(handler.handler().predict, folder, package, [str(f) for f in files],
                   what=f"{handler.name} {handler.task}", **given)
    typer.echo(json.dumps(results[0] if len(results) == 1 else results, indent=2))


@app.command("denoise")
def denoise(
    model: str = typer.Argument(..., help="A restoration model package (run folder or NAME[:VERSION])."),
    files: list[Path] = typer.Argument(..., help="Low-dose images: DICOM, PNG, JPEG (2-D)."),
    dose: float = typer.Option(None, help="Fraction of the full dose the images were acquired at (e.g. 0.1)."),
    out: Path = typer.Option(Path("."), help="Folder for the restored images."),
    classifier: str = typer.Option(None, help="A classifier package: compare its decision on input and output."),
) -> None:
    """Restore low-dose images to full-dose quality; every output is marked synthetic."""
    _run(model, files, "restoration", dose=dose, out_dir=out, classifier=classifier)


@app.command("translate")
def translate(
    model: str = typer.Argument(..., help="A translation model package (run folder or NAME[:VERSION])."),
    files: list[Path] = typer.Argument(..., help="Source-modality images: DICOM, PNG, JPEG (2-D)."),
    direction: str = typer.Option(None, help="a2b | b2a (unpaired models translate both ways; default a2b)."),
    out: Path = typer.Option(Path("."), help="Folder for the translated images."),
) -> None:
    """Translate images to another modality or domain; every output is marked synthetic."""
    _run(model, files, "translation", direction=direction, out_dir=out)
