"""``meddx serve``: the REST API and the clinicians' web page."""

from __future__ import annotations

import typer


def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on (127.0.0.1: this machine only)."),
    port: int = typer.Option(8000, help="Port."),
    model: list[str] = typer.Option(None, help="Models to offer (registry NAME[:VERSION]); default: every registered."),
    batching: bool = typer.Option(True, help="Dynamic micro-batching of model calls."),
) -> None:
    """Serve the API (/api, docs at /api/docs) and the web page (/) with the embedded defaults."""
    from meddx.service.app import serve as run
    from meddx.service.context import Settings

    overrides = {"batching": batching}
    if model:
        overrides["models"] = list(model)
    typer.echo(f"meddx serving on http://{host}:{port}/ (API docs: http://{host}:{port}/api/docs)")
    run(host, port, Settings.from_env(**overrides))
