"""The ``meddx`` command: one Typer app, one sub-module per verb group.

Only Typer is imported at start-up; every command imports what it needs inside
its body, so ``meddx --help`` stays well under a second.
"""

from __future__ import annotations

import sys

import typer

from meddx.cli import audit as _audit
from meddx.cli import data as _data
from meddx.cli import deidentify as _deidentify
from meddx.cli import evaluate as _evaluate
from meddx.cli import index as _index
from meddx.cli import info as _info
from meddx.cli import models as _models
from meddx.cli import predict as _predict
from meddx.cli import pretrain as _pretrain
from meddx.cli import report as _report
from meddx.cli import serve as _serve
from meddx.cli import stream as _stream
from meddx.cli import synthesize as _synthesize
from meddx.cli import train as _train
from meddx.cli import users as _users
from meddx.cli import validate as _validate
from meddx.exceptions import MeddxError

app = typer.Typer(
    name="meddx",
    help="Deep-learning medical diagnosis: read clinical data, train, evaluate and predict.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("info")(_info.info)
app.add_typer(_data.app, name="data")
app.command("train")(_train.train)
app.command("evaluate")(_evaluate.evaluate)
app.command("predict")(_predict.predict)
app.command("validate")(_validate.validate)
app.add_typer(_models.app, name="models")
app.add_typer(_index.app, name="index")
app.command("pretrain")(_pretrain.pretrain)
app.command("report")(_report.report)
app.command("serve")(_serve.serve)
app.add_typer(_stream.app, name="stream")
app.add_typer(_synthesize.app, name="synthesize")
app.command("deidentify")(_deidentify.deidentify)
app.add_typer(_users.app, name="users")
app.add_typer(_audit.app, name="audit")


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app; print project errors as one clear line, exit code 2."""
    try:
        result = app(args=argv, standalone_mode=False)
    except MeddxError as exc:
        typer.echo(f"error: {exc}", err=True)
        return 2
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        typer.echo("aborted", err=True)
        return 1
    except typer.TyperException as exc:  # usage errors (typer's own click) carry their own message and exit code
        show = getattr(exc, "show", None)
        if show is None:
            raise
        show()
        return int(getattr(exc, "exit_code", 2))
    return result if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
