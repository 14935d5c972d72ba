"""``meddx serve``: the REST API and the clinicians' web page."""

from __future__ import annotations

import typer


def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on (127.0.0.1: this machine only)."),
    port: int = typer.Option(8000, help="Port."),
    model: list[str] = typer.Option(None, help="Models to offer (registry NAME[:VERSION]); default: every registered."),
    batching: bool = typer.Option(True, help="Dynamic micro-batching of model calls."),
    index: list[str] = typer.Option(
        None, "--index", metavar="MODEL=INDEX",
        help="A case index (meddx index build) for a served model: its result cards show similar confirmed "
             "cases. Repeatable; adds to MEDDX_INDEXES. The index must have been built with that model."),
    make_thumbnails: bool = typer.Option(
        False, help="Before serving, write the thumbnails of every --index that has none, from the data it was "
                    "built from."),
) -> None:
    """Serve the API (/api, docs at /api/docs) and the web page (/) with the embedded defaults."""
    from meddx.service.app import serve as run
    from meddx.service.context import Settings
    from meddx.service.similar import THUMBNAILS, parse_indexes, thumbnails_from_source

    overrides: dict[str, object] = {"batching": batching}
    if model:
        overrides["models"] = list(model)
    settings = Settings.from_env(**overrides)
    if index:
        settings.indexes = {**settings.indexes, **parse_indexes(index)}
    if make_thumbnails:
        from pathlib import Path

        for name, folder in settings.indexes.items():
            if not (Path(folder) / THUMBNAILS).is_dir():
                count = thumbnails_from_source(folder)
                typer.echo(f"{name}: wrote {count} thumbnails to {Path(folder) / THUMBNAILS}")
    typer.echo(f"meddx serving on http://{host}:{port}/ (API docs: http://{host}:{port}/api/docs)")
    run(host, port, settings)
