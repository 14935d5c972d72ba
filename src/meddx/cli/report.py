"""``meddx report``: one HTML validation report (plus JSON) a reviewer can read."""

from __future__ import annotations

from pathlib import Path

import typer


def report(
    model: str = typer.Argument(..., help="A run folder / package path, or a registered NAME[:VERSION]."),
    data: str = typer.Argument(None, help="Catalogue set or folder with labels.csv (default: the model's own data)."),
    split: str = typer.Option(None, help="Split to evaluate (default: test, else all of a folder)."),
    out: Path = typer.Option(Path("report"), help="Output folder: report.html, report.json, figures/."),
    n_boot: int = typer.Option(1000, help="Bootstrap resamples for the 95% CIs."),
    explain: int = typer.Option(4, help="Example explanations to include (0: none)."),
    explain_method: str = typer.Option("gradcam", help="gradcam | gradcam++ | scorecam."),
    local_fraction: float = typer.Option(
        0.0, help="Recalibrate on this share of the data (a local labelled sample) and score on the rest."),
    uncertainty: str = typer.Option("auto", help="Uncertainty method for the abstention figures."),
    check: bool = typer.Option(False, "--check", help="Render the page in headless Chromium, fail on console "
                               "errors, and save report.png."),
) -> None:
    """Write a validation report: metrics with CIs, calibration, operating points, subgroups,
    uncertainty, explanations with their checks, the model card and a TRIPOD+AI / CLAIM checklist."""
    from meddx.exceptions import InvalidValueError
    from meddx.modalities import call, handler_for_package
    from meddx.packaging.registry import read_package, resolve

    folder = resolve(model)
    package = read_package(folder)
    handler = handler_for_package(package)
    module = handler.handler()
    if not hasattr(module, "report"):
        raise InvalidValueError(f"no validation report for {handler.name} {handler.task} models yet", path=folder,
                                field="modality", hint="Use `meddx evaluate MODEL DATA --out FOLDER` for metrics with CIs")
    given = {"explain": explain, "explain_method": explain_method, "local_fraction": local_fraction,
             "uncertainty": uncertainty}
    html = call(module.report, folder, package, data, out=out, n_boot=n_boot, split=split,
                what=f"{handler.name} {handler.task}", **{k: v for k, v in given.items() if v != _DEFAULTS[k]})
    typer.echo(str(html))
    if check:
        from meddx.report import render_check

        result = render_check(html, out / "report.png")
        problems = result["console_errors"] + result["exceptions"]
        if problems:
            raise InvalidValueError(f"the report raised {len(problems)} console errors in Chromium: {problems[:3]}",
                                    path=html, field="html")
        typer.echo(f"rendered in {result.get('chromium')}: no console errors; screenshot {result['screenshot']}")


_DEFAULTS = {"explain": 4, "explain_method": "gradcam", "local_fraction": 0.0, "uncertainty": "auto"}
