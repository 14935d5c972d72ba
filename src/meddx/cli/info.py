"""``meddx info``: version, installed extras, and where data comes from."""

from __future__ import annotations

import importlib.util

import typer

# extra -> the import names that show it is installed
EXTRAS: dict[str, tuple[str, ...]] = {
    "dicom": ("pydicom",),
    "nifti": ("nibabel",),
    "signals": ("wfdb", "pyedflib", "scipy"),
    "records": ("fhir.resources", "hl7"),
    "train": ("torch", "torchvision", "timm", "safetensors", "sklearn", "matplotlib"),
}


def installed_extras() -> dict[str, bool]:
    """For each optional extra, whether all its libraries can be imported."""

    def present(module: str) -> bool:
        try:
            return importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            return False

    return {name: all(present(m) for m in modules) for name, modules in EXTRAS.items()}


def info() -> None:
    """Print the version, the installed extras and the data mirror/cache in use."""
    from meddx import __version__
    from meddx.config import cache_dir, data_mirror, home_dir

    mirror = data_mirror()
    typer.echo(f"meddx {__version__}")
    extras = installed_extras()
    typer.echo("extras: " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in extras.items()))
    if mirror is None:
        typer.echo("data mirror: none (MEDDX_DATA_MIRROR unset; data sets are downloaded)")
    else:
        state = "" if mirror.is_dir() else "  [MISSING]"
        typer.echo(f"data mirror: {mirror}{state}")
    typer.echo(f"data cache: {cache_dir()}")
    typer.echo(f"home (runs, models): {home_dir()}")
