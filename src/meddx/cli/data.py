"""``meddx data``: browse the catalogue, fetch and verify data sets, read files."""

from __future__ import annotations

from pathlib import Path

import typer

from meddx.cli.index import duplicates as _duplicates

app = typer.Typer(help="The data catalogue: list, info, fetch, read.", no_args_is_help=True)
app.command("duplicates")(_duplicates)


@app.command("list")
def list_() -> None:
    """List every catalogued data set with its task and modality."""
    from meddx.data.catalogue import list_datasets

    specs = list_datasets()
    width = max(len(s.name) for s in specs)
    typer.echo(f"{'name':<{width}}  {'download':<8}  task / modality")
    for spec in specs:
        how = "auto" if spec.downloadable else "manual"
        typer.echo(f"{spec.name:<{width}}  {how:<8}  {spec.task} / {spec.modality}")


@app.command("info")
def info(
    name: str = typer.Argument(..., help="Data set name (see `meddx data list`)."),
    verify: bool = typer.Option(True, help="Verify checksums of every file."),
) -> None:
    """Show a data set's source, licence, splits and sample counts; verify its checksums."""
    from meddx.data import fetch as fetch_mod
    from meddx.data.catalogue import count_samples, fetch, get_dataset

    spec = get_dataset(name)
    folder = fetch(name, verify=False)
    typer.echo(f"{spec.name}: {spec.title}")
    typer.echo(f"  task:      {spec.task}")
    typer.echo(f"  modality:  {spec.modality}")
    if spec.classes:
        typer.echo("  classes:   " + "; ".join(f"{k} = {v}" for k, v in spec.classes.items()))
    typer.echo(f"  splits:    {spec.splits}")
    typer.echo(f"  group by:  {spec.group_by}")
    typer.echo(f"  licence:   {spec.licence}")
    typer.echo(f"  citation:  {spec.citation}")
    typer.echo(f"  homepage:  {spec.homepage}")
    for remote in spec.remotes:
        check = f"md5 {remote.md5}" if remote.md5 else f"sha256 {remote.sha256}" if remote.sha256 else "no published checksum"
        typer.echo(f"  source:    {remote.url} ({check})")
    if spec.manual_download:
        typer.echo(f"  manual:    {spec.manual_download}")
    if spec.notes:
        typer.echo(f"  notes:     {spec.notes}")
    typer.echo(f"  location:  {folder}")
    if verify:
        pinned = spec.manifest_sha256 if fetch_mod.mirror_folder(name) == folder else None
        report = fetch_mod.verify_folder(folder, manifest_sha256=pinned)
        typer.echo(
            f"  checksums: OK, {report.files_checked} files, {report.bytes_checked:,} bytes (sha256)"
            + (f"; {len(report.unlisted)} unlisted files ignored" if report.unlisted else "")
        )
    typer.echo("  samples:")
    for key, value in count_samples(name, folder).items():
        typer.echo(f"    {key:<32} {value:>8,}")


@app.command("fetch")
def fetch(name: str = typer.Argument(..., help="Data set name.")) -> None:
    """Fetch a data set (mirror → cache → download), verify it, print its folder."""
    from meddx.data.catalogue import fetch as do_fetch

    typer.echo(str(do_fetch(name)))


@app.command("read")
def read(
    path: Path = typer.Argument(..., help="A file or folder to read."),
    reader: str = typer.Option(None, help="Force a reader by name."),
    option: list[str] = typer.Option(
        None, "--option", "-o", help="Reader option KEY=VALUE (e.g. -o allow_nan=true); repeatable."
    ),
) -> None:
    """Read one file and print its type, shape and metadata."""
    from meddx.data.readers import read as do_read

    sample = do_read(path, reader=reader, **_parse_options(option or []))
    typer.echo(f"{sample.kind} read by {sample.format}: {path}")
    for key in ("shape", "spacing", "modality", "n_samples", "fs", "channel_names", "units", "n_rows",
                "patient_id", "study_id"):
        value = getattr(sample, key, None)
        if value not in (None, [], ()):
            typer.echo(f"  {key}: {value}")
    if getattr(sample, "annotations", None):
        typer.echo(f"  annotations: {len(sample.annotations)}")
    if hasattr(sample, "counts"):
        typer.echo(f"  counts: {sample.counts()}")
    if getattr(sample, "resources", None):
        typer.echo(f"  resources: {sample.resources}")


def _parse_options(items: list[str]) -> dict[str, object]:
    """``["allow_nan=true", "fs=250"]`` → ``{"allow_nan": True, "fs": 250}`` (JSON values, else strings)."""
    import json

    from meddx.exceptions import ConfigError

    options: dict[str, object] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"reader option {item!r} is not KEY=VALUE", field="--option")
        try:
            options[key] = json.loads(raw)
        except json.JSONDecodeError:
            options[key] = raw
    return options
