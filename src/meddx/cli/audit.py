"""``meddx audit``: check and read the service's hash-chained audit log."""

from __future__ import annotations

import typer

app = typer.Typer(help="The service's audit log: verify the hash chain, show the last entries.",
                  no_args_is_help=True)


@app.command("verify")
def verify() -> None:
    """Check every entry's hash, link and MAC, and the head checkpoints kept outside the database.

    Exit 0 when intact, 2 (listing the problems) otherwise. Run it where the
    service's ``MEDDX_HOME`` is (its ``keys/audit.key`` and ``audit/`` checkpoints):
    elsewhere a rewritten chain or a cut tail cannot be told from an intact one.
    """
    from meddx.storage import audit
    from meddx.storage.db import database_session

    with database_session() as session:
        result = audit.verify(session)
    if result.ok:
        head = f"; head {result.head_hash}" if result.head_hash else ""
        typer.echo(f"audit log intact: {result.entries} {'entry' if result.entries == 1 else 'entries'}, "
                   f"{result.anchored} anchored (keyed MAC and checkpoints){head}")
        for note in result.notes:
            typer.echo(f"  note: {note}")
        return
    typer.echo(f"audit log BROKEN: {len(result.problems)} problem(s) in {result.entries} entries")
    for problem in result.problems:
        typer.echo(f"  {problem}")
    for note in result.notes:
        typer.echo(f"  note: {note}")
    raise typer.Exit(2)


@app.command("tail")
def tail(n: int = typer.Option(20, "-n", "--lines", min=1, help="How many of the newest entries to show.")) -> None:
    """Show the newest entries, oldest first: id, time, user, action, patient, model, summary, hash."""
    from meddx.storage import audit
    from meddx.storage.db import database_session

    with database_session() as session:
        entries = audit.tail(session, n)
    if not entries:
        typer.echo("the audit log is empty")
        return
    for e in entries:
        fields = [str(e.id), e.ts.strftime("%Y-%m-%dT%H:%M:%SZ"), e.user, e.action,
                  e.patient_pseudonym or "-", e.model_version or "-", e.summary or "-", e.hash[:12]]
        typer.echo("  ".join(fields))
