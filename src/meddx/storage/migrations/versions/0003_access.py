"""Access model and audit anchoring: care teams, their members, break-glass grants, and audit_log.mac.

Written by hand to match meddx.storage.models (a test compares the migrated schema
with the models); self-contained, like 0001. Existing audit entries keep a NULL
``mac``: ``meddx audit verify`` checks them by their hash chain and says so.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create care_teams, care_team_members and break_glass; add audit_log.mac."""
    op.create_table(
        "care_teams",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_care_teams"),
        sa.UniqueConstraint("name", name="uq_care_teams_name"),
    )
    op.create_table(
        "care_team_members",
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("added_at", _TS, nullable=False),
        sa.ForeignKeyConstraint(["team_id"], ["care_teams.id"], name="fk_care_team_members_team_id_care_teams",
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_care_team_members_user_id_users",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("team_id", "user_id", name="pk_care_team_members"),
    )
    op.create_index("ix_care_team_members_user_id", "care_team_members", ["user_id"])
    op.create_table(
        "break_glass",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("patient_pseudonym", sa.String(64), nullable=True),
        sa.Column("reason", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.CheckConstraint("expires_at > created_at", name=op.f("ck_break_glass_window")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_break_glass_user_id_users", ondelete="RESTRICT"),
        sa.PrimaryKeyConstraint("id", name="pk_break_glass"),
    )
    op.create_index("ix_break_glass_user_id", "break_glass", ["user_id"])
    op.create_index("ix_break_glass_expires_at", "break_glass", ["expires_at"])
    with op.batch_alter_table("audit_log") as batch:  # ADD COLUMN only: SQLite keeps the table (and its triggers)
        batch.add_column(sa.Column("mac", sa.String(64), nullable=True))


def downgrade() -> None:
    """Drop the three access tables and audit_log.mac."""
    op.drop_index("ix_break_glass_expires_at", table_name="break_glass")
    op.drop_index("ix_break_glass_user_id", table_name="break_glass")
    op.drop_table("break_glass")
    op.drop_index("ix_care_team_members_user_id", table_name="care_team_members")
    op.drop_table("care_team_members")
    op.drop_table("care_teams")
    op.drop_column("audit_log", "mac")
