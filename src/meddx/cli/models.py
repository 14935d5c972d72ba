"""``meddx models``: the local registry of model packages (``$MEDDX_HOME/models``)."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="The local model registry: list, show, register, export.", no_args_is_help=True)


@app.command("list")
def list_() -> None:
    """List registered packages, every version, with architecture, data and test AUC."""
    from meddx.packaging import list_models, registry_dir

    rows = list_models()
    if not rows:
        typer.echo(f"no models registered in {registry_dir()}; add one with `meddx models register RUN_FOLDER`")
        return
    table = []
    for r in rows:
        auc = r["test_auc"] or {}
        value = auc.get("value")
        auc_text = (f"{value:.3f} ({auc.get('low', float('nan')):.3f}–{auc.get('high', float('nan')):.3f})"
                    if isinstance(value, (int, float)) else "-")
        table.append((f"{r['name']}:{r['version']}" + (" *" if r["latest"] else ""), r["architecture"] or "-",
                      str(r["data"] or "-"), ", ".join(r["classes"]), auc_text))
    header = ("model (* latest)", "architecture", "data", "classes", "test AUC (95% CI)")
    widths = [max(len(header[i]), *(len(row[i]) for row in table)) for i in range(len(header))]
    for row in (header, *table):
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


@app.command("show")
def show(
    model: str = typer.Argument(..., help="NAME[:VERSION] (latest when no version), or a package folder."),
) -> None:
    """Print a package's model card (generated from package.json)."""
    from meddx.packaging import read_package, render_card, resolve

    folder = resolve(model)
    typer.echo(render_card(read_package(folder)), nl=False)
    typer.echo(f"\n<!-- {folder} -->")


@app.command("register")
def register(
    run_folder: Path = typer.Argument(..., help="A run folder written by `meddx train`."),
    name: str = typer.Option(None, help="Register under this name (default: the package's)."),
    version: str = typer.Option(None, help="Register as this version (default: the package's)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a registered version with other weights."),
) -> None:
    """Copy a run folder's package into the registry (weights, package.json, card); print NAME:VERSION."""
    from meddx.packaging import read_package, register as do_register

    target = do_register(run_folder, name=name, version=version, overwrite=overwrite)
    package = read_package(target)
    typer.echo(f"{package['name']}:{package['version']}")
    typer.echo(f"registered in {target}", err=True)


@app.command("export")
def export(
    model: str = typer.Argument(..., help="A package folder, or a registered NAME[:VERSION]."),
) -> None:
    """Write a package's ONNX export (model.onnx, checked against the torch model), so that predictions
    run on ONNX Runtime without importing torch. `meddx train` does this itself; use it for older packages."""
    from meddx.inference.export import export_existing

    for record in export_existing(model):
        typer.echo(f"{record['folder']}/{record['file']}  max |Δlogit| vs torch {record['max_abs_logit_gap']:.2e}")


@app.command("fit-ood")
def fit_ood(
    model: str = typer.Argument(..., help="A package folder (image or signal), or a registered NAME[:VERSION]."),
    flag_rate: float = typer.Option(0.05, help="Share of in-distribution (validation) inputs to flag."),
) -> None:
    """Fit (or refit) a package's out-of-distribution gate on its own training and validation splits.

    `meddx train` does this itself; use it for older packages or to change the flag rate.
    Image and signal packages are refitted in place; a record package fits its gate with its
    model (its cross-fitted features depend on the folds), so retrain it instead."""
    from meddx.exceptions import ConfigError
    from meddx.modalities import handler_for_package
    from meddx.packaging.registry import read_package, resolve

    handler = handler_for_package(read_package(resolve(model)))
    refit_ood = getattr(handler.handler(), "refit_ood", None)
    if refit_ood is None:
        raise ConfigError(f"a {handler.name} {handler.task} package's OOD gate is fitted with its model", path=model,
                          field="ood", hint="Retrain it with `meddx train` and pass --flag-rate to the training "
                          "config if needed")
    block = refit_ood(model, flag_rate=flag_rate)
    for name, info in block["methods"].items():
        mark = "*" if name == block["method"] else " "
        typer.echo(f"{mark} {name:12s} threshold {info['threshold']:.4g}  validation flag rate "
                   f"{info['val_flag_rate']:.3f}")
    typer.echo(f"fitted on {block['fitted_on']}; thresholds on {block['threshold_on']}", err=True)
