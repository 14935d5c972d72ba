"""Who may read which study: own studies, care-team shares, admins, and audited break-glass.

The access model (documented in ``docs/security.md``):

- a clinician reads the studies they uploaded (``own``);
- and the studies uploaded by anyone who shares a care team with them
  (``team``); admins alone manage teams and their members (API
  ``/api/admin/teams``, CLI ``meddx users team-*``);
- in an emergency, a clinician opens a *break-glass* grant with a written
  reason, for one patient or for all, for at most :data:`MAX_BREAK_GLASS_MINUTES`;
  every study read through it is audited as ``access.break_glass_use`` and admins
  list grants and uses (``GET /api/admin/break-glass``);
- admins read every study (they can create accounts and teams anyway, so hiding
  studies from them would be theatre); their reads are audited like everyone's.

Everything that shows a study, its results, overlays, preview or FHIR report,
or a list of studies, asks this module, through :func:`study_access` for one
study and :func:`visible_studies` for lists. A study the caller may not read
answers exactly like one that does not exist (404), so ids cannot be probed.
Roles and memberships are read from the database at every request, never from
the token, so a change takes effect at once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from fastapi import HTTPException
from sqlalchemy import ColumnElement, false, or_, select, true
from sqlalchemy.orm import Session

from meddx.exceptions import ConfigError
from meddx.storage.models import (
    BreakGlassGrant,
    CareTeam,
    CareTeamMember,
    Patient,
    Study,
    User,
    record_aad,
    utcnow,
)
from meddx.storage.users import UnknownUserError

MAX_BREAK_GLASS_MINUTES = 240
MIN_REASON_CHARS = 20
NOT_VISIBLE = ("no such {what}, or it is not shared with you: ask an admin to add you to the uploader's care "
               "team, or in an emergency open break-glass access (POST /api/break-glass, with a reason)")


@dataclass(frozen=True)
class Access:
    """Why the caller may read a study: ``own``, ``team``, ``admin`` or ``break_glass`` (with its grant)."""

    basis: str
    grant_id: int | None = None


def get_row_or_404(session: Session, model: Any, row_id: str, what: str) -> Any:
    """The row of ``model`` whose UUID is ``row_id``; 404 (never 500) for a malformed or unknown id."""
    try:
        key = uuid.UUID(row_id)
    except ValueError as exc:
        raise HTTPException(404, f"no such {what}") from exc
    row = session.get(model, key)
    if row is None:
        raise HTTPException(404, f"no such {what}")
    return row


def account(session: Session, username: str) -> User:
    """The caller's account row (its role there, not the token's, decides)."""
    user = session.query(User).filter_by(username=username).one_or_none()
    if user is None or not user.active:
        raise HTTPException(401, "the account is disabled or changed: log in again")
    return user


def teammate_ids(session: Session, user: User) -> set[int]:
    """Ids of every account that shares a care team with ``user``, ``user`` included."""
    mine = select(CareTeamMember.team_id).where(CareTeamMember.user_id == user.id)
    rows = session.scalars(select(CareTeamMember.user_id).where(CareTeamMember.team_id.in_(mine))).all()
    return {user.id, *rows}


def active_grants(session: Session, user: User, now: datetime | None = None) -> list[BreakGlassGrant]:
    """The caller's break-glass grants that have not expired, newest first."""
    now = now or utcnow()
    return list(session.scalars(select(BreakGlassGrant).where(BreakGlassGrant.user_id == user.id,
                                                              BreakGlassGrant.expires_at > now)
                                .order_by(BreakGlassGrant.id.desc())).all())


def _grant_for(grants: list[BreakGlassGrant], pseudonym: str) -> BreakGlassGrant | None:
    return next((g for g in grants if g.patient_pseudonym in (None, pseudonym)), None)


def study_access(session: Session, user: User, study: Study, now: datetime | None = None) -> Access | None:
    """Why ``user`` may read ``study``, or None when they may not."""
    if user.role == "admin":
        return Access("admin")
    if user.role != "clinician":
        return None
    if study.uploaded_by == user.id:
        return Access("own")
    if study.uploaded_by in teammate_ids(session, user):
        return Access("team")
    grant = _grant_for(active_grants(session, user, now), study.patient.pseudonym)
    return Access("break_glass", grant.id) if grant is not None else None


def visible_studies(session: Session, user: User, now: datetime | None = None) -> ColumnElement[bool]:
    """A WHERE clause on :class:`Study` for what ``user`` may list (see :func:`study_access`)."""
    if user.role == "admin":
        return true()
    if user.role != "clinician":
        return false()
    clause: ColumnElement[bool] = Study.uploaded_by.in_(teammate_ids(session, user))
    grants = active_grants(session, user, now)
    if any(g.patient_pseudonym is None for g in grants):
        return true()
    pseudonyms = [g.patient_pseudonym for g in grants]
    if pseudonyms:
        clause = or_(clause, Study.patient_id.in_(select(Patient.id).where(Patient.pseudonym.in_(pseudonyms))))
    return clause


def listed_access(session: Session, user: User, studies: list[Study], now: datetime | None = None
                  ) -> dict[Any, Access]:
    """:func:`study_access` for many studies at once (one query for teams and grants)."""
    if user.role == "admin":
        return {s.id: Access("admin") for s in studies}
    team = teammate_ids(session, user)
    grants = active_grants(session, user, now)
    out = {}
    for study in studies:
        if study.uploaded_by == user.id:
            out[study.id] = Access("own")
        elif study.uploaded_by in team:
            out[study.id] = Access("team")
        else:
            grant = _grant_for(grants, study.patient.pseudonym)
            if grant is not None:
                out[study.id] = Access("break_glass", grant.id)
    return out


# --- break-glass ------------------------------------------------------------------------------------------------


def open_break_glass(session: Session, encryptor: Any, user: User, reason: str, patient: str | None,
                     minutes: int) -> BreakGlassGrant:
    """A new grant for ``user`` (the caller commits and audits it). The reason is stored encrypted."""
    reason = " ".join(reason.split())
    if len(reason) < MIN_REASON_CHARS:
        raise ConfigError(f"the reason has {len(reason)} characters; write at least {MIN_REASON_CHARS}",
                          field="reason", hint="say why you need the record now (an admin reviews every grant)")
    if not 1 <= minutes <= MAX_BREAK_GLASS_MINUTES:
        raise ConfigError(f"{minutes} minutes is outside 1-{MAX_BREAK_GLASS_MINUTES}", field="minutes")
    if user.role != "clinician":
        raise ConfigError(f"break-glass is for clinicians; a {user.role} has no use for it", field="role")
    if patient is not None and session.query(Patient).filter_by(pseudonym=patient).one_or_none() is None:
        raise HTTPException(404, "no such patient")
    now = utcnow()
    grant = BreakGlassGrant(user_id=user.id, patient_pseudonym=patient, reason=b"", created_at=now,
                            expires_at=now + timedelta(minutes=minutes))
    session.add(grant)
    session.flush()
    grant.reason = encryptor.encrypt(reason.encode("utf-8"), record_aad("break_glass.reason", grant.id))
    return grant


def grant_reason(encryptor: Any, grant: BreakGlassGrant) -> str:
    """The grant's reason in clear (admins only)."""
    return encryptor.decrypt(grant.reason, record_aad("break_glass.reason", grant.id)).decode("utf-8")


def use_summary(grant_id: int, action: str) -> str:
    """The audit summary of one break-glass use (how admins find a grant's uses)."""
    return f"grant {grant_id}: {action}"


# --- care teams --------------------------------------------------------------------------------------------------


def create_team(session: Session, name: str) -> CareTeam:
    """A new, empty care team (ConfigError when the name is taken or not usable)."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9 ._-]{1,63}", name):
        raise ConfigError(f"{name!r} is not a team name", field="name",
                          hint="2-64 letters, digits, spaces, '.', '_' or '-', starting with a letter or digit")
    if session.query(CareTeam).filter_by(name=name).one_or_none() is not None:
        raise ConfigError(f"a team named {name!r} exists", field="name", hint="pick another name")
    team = CareTeam(name=name)
    session.add(team)
    session.flush()
    return team


class UnknownTeamError(ConfigError, LookupError):
    """No care team with this name."""


def _team_and_user(session: Session, team: str, username: str) -> tuple[CareTeam, User]:
    """The team and the account; a LookupError (the API answers 404) naming which one is unknown."""
    found = session.query(CareTeam).filter_by(name=team).one_or_none()
    if found is None:
        raise UnknownTeamError(f"no care team {team!r}", field="team",
                               hint="list them: GET /api/admin/teams, meddx users teams")
    user = session.query(User).filter_by(username=username.strip().lower()).one_or_none() \
        or session.query(User).filter_by(username=username).one_or_none()
    if user is None:
        raise UnknownUserError(f"no user {username!r}", field="username",
                               hint="list them: GET /api/admin/users, meddx users list")
    return found, user


def add_member(session: Session, team: str, username: str) -> bool:
    """Put ``username`` in ``team``; False when already there."""
    found, user = _team_and_user(session, team, username)
    if session.get(CareTeamMember, (found.id, user.id)) is not None:
        return False
    session.add(CareTeamMember(team_id=found.id, user_id=user.id))
    session.flush()
    return True


def remove_member(session: Session, team: str, username: str) -> bool:
    """Take ``username`` out of ``team``; False when not a member."""
    found, user = _team_and_user(session, team, username)
    member = session.get(CareTeamMember, (found.id, user.id))
    if member is None:
        return False
    session.delete(member)
    session.flush()
    return True


def list_teams(session: Session) -> list[tuple[str, list[str]]]:
    """Every team with its members' usernames, by name."""
    teams = session.scalars(select(CareTeam).order_by(CareTeam.name)).all()
    return [(t.name, sorted(m.user.username for m in t.members)) for t in teams]
