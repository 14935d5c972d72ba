"""``meddx users``: service accounts (create, list, disable, enable, reset-password) and care teams.

There is never a default password: ``create`` prints a random one-time password
once (unless ``--password-stdin`` gives one), and the account must change it at
first login. Every change is written to the audit log.
"""

from __future__ import annotations

import sys
from enum import Enum

import typer

app = typer.Typer(help="Accounts of the clinician service: create, list, disable; care teams; break-glass log.",
                  no_args_is_help=True)


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
    from meddx.storage.db import database_session
    from meddx.storage.users import create_user

    if admin and role is not None and role is not Role.admin:
        raise ConfigError(f"--admin contradicts --role {role.value}", field="--role")
    chosen = "admin" if admin else (role.value if role is not None else "clinician")
    password = _read_password() if password_stdin else None
    with database_session() as session:
        user, one_time = create_user(session, username, chosen, password)
        audit.append(session, user=_operator(), action="user.create", summary=f"{user.username} role={chosen}")
        session.commit()
    typer.echo(f"created user {user.username} (role {chosen})", err=True)
    if one_time is not None:
        typer.echo("one-time password (shown only now; it must be changed at first login):", err=True)
        typer.echo(one_time)


@app.command("list")
def list_() -> None:
    """List accounts: username, role, active, password change due, lockout."""
    from meddx.storage.db import database_session
    from meddx.storage.models import utcnow
    from meddx.storage.users import list_users

    with database_session() as session:
        users = list_users(session)
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
    from meddx.storage.db import database_session
    from meddx.storage.users import set_active

    with database_session() as session:
        user = set_active(session, username, active)
        audit.append(session, user=_operator(), action="user.enable" if active else "user.disable",
                     summary=user.username)
        session.commit()
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
    from meddx.storage.db import database_session
    from meddx.storage.users import UnknownUserError, get_user, reset_password as do_reset

    with database_session() as session:
        user = get_user(session, username)
        if user is None:
            raise UnknownUserError(f"no user {username!r}", field="username", hint="see `meddx users list`")
        one_time = do_reset(session, user)
        audit.append(session, user=_operator(), action="user.reset_password", summary=user.username)
        session.commit()
    typer.echo(f"new one-time password for {user.username} (shown only now; it must be changed at first login):",
               err=True)
    typer.echo(one_time)


# --- care teams and break-glass (the access model: meddx.service.access, docs/security.md) -------------------


def _team_change(team: str, username: str, add: bool) -> bool:
    from meddx.service import access
    from meddx.storage import audit
    from meddx.storage.db import database_session

    with database_session() as session:
        changed = (access.add_member if add else access.remove_member)(session, team, username)
        if changed:
            audit.append(session, user=_operator(), action="team.add" if add else "team.remove",
                         summary=f"{username[:64]} {'to' if add else 'from'} {team[:64]}")
        session.commit()
    return changed


@app.command("teams")
def teams() -> None:
    """List care teams and their members (a clinician reads the studies of everyone in a team with them)."""
    from meddx.service import access
    from meddx.storage.db import database_session

    with database_session() as session:
        found = access.list_teams(session)
    if not found:
        typer.echo("no care teams yet; create one with `meddx users team-create NAME`")
        return
    for name, members in found:
        typer.echo(f"{name}: {', '.join(members) or '(no members)'}")


@app.command("team-create")
def team_create(name: str = typer.Argument(..., help="Team or department name, e.g. 'radiology'.")) -> None:
    """Create an empty care team."""
    from meddx.service import access
    from meddx.storage import audit
    from meddx.storage.db import database_session

    with database_session() as session:
        access.create_team(session, name)
        audit.append(session, user=_operator(), action="team.create", summary=name)
        session.commit()
    typer.echo(f"created care team {name}")


@app.command("team-add")
def team_add(team: str = typer.Argument(..., help="The care team."),
             username: str = typer.Argument(..., help="The account to add.")) -> None:
    """Add an account to a care team: it reads the team's studies from now on, and they its."""
    changed = _team_change(team, username, add=True)
    typer.echo(f"added {username} to {team}" if changed else f"{username} was already in {team}")


@app.command("team-remove")
def team_remove(team: str = typer.Argument(..., help="The care team."),
                username: str = typer.Argument(..., help="The account to take out.")) -> None:
    """Take an account out of a care team (its access to the team's studies ends at once)."""
    from meddx.exceptions import ConfigError

    if not _team_change(team, username, add=False):
        raise ConfigError(f"{username!r} is not in {team!r}", field="username", hint="see `meddx users teams`")
    typer.echo(f"removed {username} from {team}")


@app.command("break-glass")
def break_glass_log(n: int = typer.Option(50, "-n", "--grants", min=1, help="How many of the newest grants.")
                    ) -> None:
    """List break-glass grants, newest first: who, which patient, until when, why, and each audited use."""
    from sqlalchemy import select

    from meddx.service import access
    from meddx.storage import audit
    from meddx.storage.crypto import Encryptor
    from meddx.storage.db import database_session
    from meddx.storage.models import AuditEntry, BreakGlassGrant, utcnow

    encryptor = Encryptor.from_config(create=False)
    with database_session() as session:
        grants = session.scalars(select(BreakGlassGrant).order_by(BreakGlassGrant.id.desc()).limit(n)).all()
        now = utcnow()
        if not grants:
            typer.echo("no break-glass grants")
        for grant in grants:
            state = "active" if grant.expires_at > now else "expired"
            typer.echo(f"grant {grant.id}  {grant.user.username}  patient {grant.patient_pseudonym or 'ALL'}  "
                       f"{grant.created_at:%Y-%m-%d %H:%M}-{grant.expires_at:%H:%M} UTC ({state})")
            typer.echo(f"  reason: {access.grant_reason(encryptor, grant)}")
            prefix = access.use_summary(grant.id, "")
            for use in session.scalars(select(AuditEntry).where(
                    AuditEntry.action == "access.break_glass_use",
                    AuditEntry.summary.startswith(prefix, autoescape=True)).order_by(AuditEntry.id)):
                typer.echo(f"  used {use.ts:%Y-%m-%d %H:%M:%S}  {use.patient_pseudonym or '-'}  "
                           f"{(use.summary or '')[len(prefix):]}")
        audit.append(session, user=_operator(), action="admin.break_glass.read", summary=f"{len(grants)} grants")
        session.commit()
