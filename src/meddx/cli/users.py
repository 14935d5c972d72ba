"""``meddx users``: service accounts (create, list, disable, enable, reset-password).

There is never a default password: ``create`` prints a random one-time password
once (unless ``--password-stdin`` gives one), and the account must change it at
first login. Every change is written to the audit log.
"""

from __future__ import annotations

import sys
from enum import Enum

import typer

app = typer.Typer(help="Accounts of the clinician service: create, list, disable.", no_args_is_help=True)


class Role(str, Enum):
    """Roles an account can have (kept in step with meddx.storage.models.ROLES)."""

    clinician = "clinician"
    engineer = "engineer"
    admin = "admin"


def _operator() -> str:
    """Who runs the command, for the audit log (``cli:<os user>``)."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"[:64]
    except Exception:  # no user name in the environment or the password database
        return "cli"


def _read_password() -> str:
    """One line from stdin without its line ending (the password is never echoed)."""
    from meddx.exceptions import ConfigError

    line = sys.stdin.readline()
    password = line.rstrip("\r\n")
    if not password:
        raise ConfigError("no password on stdin", field="--password-stdin",
                          hint="pipe it in, e.g. `meddx users create NAME --password-stdin < file`")
    return password


@app.command("create")
def create(
    username: str = typer.Argument(..., help="Login name (case-insensitive)."),
    admin: bool = typer.Option(False, "--admin", help="Same as --role admin."),
    role: Role = typer.Option(None, "--role", help="Role of the account (default: clinician)."),
    password_stdin: bool = typer.Option(False, "--password-stdin",
                                        help="Read the password from stdin instead of generating a one-time one."),
) -> None:
    """Create an account; print its one-time password once (stdout), unless --password-stdin gave one."""
    from meddx.exceptions import ConfigError
    from meddx.storage import audit
    from meddx.storage.db import open_database
    from meddx.storage.users import create_user

    if admin and role is not None and role is not Role.admin:
        raise ConfigError(f"--admin contradicts --role {role.value}", field="--role")
    chosen = "admin" if admin else (role.value if role is not None else "clinician")
    password = _read_password() if password_stdin else None
    engine, sessions = open_database()
    try:
        with sessions() as session:
            user, one_time = create_user(session, username, chosen, password)
            audit.append(session, user=_operator(), action="user.create", summary=f"{user.username} role={chosen}")
            session.commit()
    finally:
        engine.dispose()
    typer.echo(f"created user {user.username} (role {chosen})", err=True)
    if one_time is not None:
        typer.echo("one-time password (shown only now; it must be changed at first login):", err=True)
        typer.echo(one_time)


@app.command("list")
def list_() -> None:
    """List accounts: username, role, active, password change due, lockout."""
    from meddx.storage.db import open_database
    from meddx.storage.models import utcnow
    from meddx.storage.users import list_users

    engine, sessions = open_database()
    try:
        with sessions() as session:
            users = list_users(session)
    finally:
        engine.dispose()
    if not users:
        typer.echo("no accounts yet; create the first with `meddx users create NAME --admin`")
        return
    now = utcnow()
    header = ("username", "role", "active", "must change password", "locked until", "created")
    rows = [(u.username, u.role, "yes" if u.active else "no", "yes" if u.must_change_password else "no",
             u.locked_until.strftime("%Y-%m-%d %H:%M UTC") if u.is_locked(now) else "-",
             u.created_at.strftime("%Y-%m-%d")) for u in users]
    widths = [max(len(header[i]), *(len(row[i]) for row in rows)) for i in range(len(header))]
    for row in (header, *rows):
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _set_active(username: str, active: bool) -> None:
    from meddx.storage import audit
    from meddx.storage.db import open_database
    from meddx.storage.users import set_active

    engine, sessions = open_database()
    try:
        with sessions() as session:
            user = set_active(session, username, active)
            audit.append(session, user=_operator(), action="user.enable" if active else "user.disable",
                         summary=user.username)
            session.commit()
    finally:
        engine.dispose()
    typer.echo(f"{'enabled' if active else 'disabled'} user {user.username}")


@app.command("disable")
def disable(username: str = typer.Argument(..., help="The account to disable.")) -> None:
    """Disable an account: it can no longer log in (nothing is deleted; the audit log keeps its name)."""
    _set_active(username, False)


@app.command("enable")
def enable(username: str = typer.Argument(..., help="The account to enable again.")) -> None:
    """Enable a disabled account."""
    _set_active(username, True)


@app.command("reset-password")
def reset_password(username: str = typer.Argument(..., help="The account whose password is replaced.")) -> None:
    """Give an account a new one-time password (printed once) and end any lockout."""
    from meddx.storage import audit
    from meddx.storage.db import open_database
    from meddx.storage.users import UnknownUserError, get_user, reset_password as do_reset

    engine, sessions = open_database()
    try:
        with sessions() as session:
            user = get_user(session, username)
            if user is None:
                raise UnknownUserError(f"no user {username!r}", field="username", hint="see `meddx users list`")
            one_time = do_reset(session, user)
            audit.append(session, user=_operator(), action="user.reset_password", summary=user.username)
            session.commit()
    finally:
        engine.dispose()
    typer.echo(f"new one-time password for {user.username} (shown only now; it must be changed at first login):",
               err=True)
    typer.echo(one_time)
