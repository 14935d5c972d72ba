"""Drift monitors: one per served model, its per-study history and its alarms.

Written by hand to match meddx.storage.models (a test compares the migrated schema
with the models); self-contained, like 0001.

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create drift_monitors, drift_points and drift_alarms."""
    op.create_table(
        "drift_monitors",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_name", sa.String(128), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("studies", sa.Integer(), nullable=False),
        sa.Column("rejected", sa.Integer(), nullable=False),
        sa.Column("alarm", sa.Boolean(), nullable=False),
        sa.CheckConstraint("studies >= 0 AND rejected >= 0", name=op.f("ck_drift_monitors_counts")),
        sa.PrimaryKeyConstraint("id", name="pk_drift_monitors"),
        sa.UniqueConstraint("model_name", "model_version", name="uq_drift_monitors_model"),
    )
    op.create_table(
        "drift_points",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("monitor_id", sa.Integer(), nullable=False),
        sa.Column("ts", _TS, nullable=False),
        sa.Column("study", sa.Integer(), nullable=False),
        sa.Column("rejected", sa.Boolean(), nullable=False),
        sa.Column("flagged", sa.Boolean(), nullable=True),
        sa.Column("ood_score", sa.Float(), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("cusum", sa.Float(), nullable=True),
        sa.Column("ks", sa.Float(), nullable=True),
        sa.Column("recent_flag_rate", sa.Float(), nullable=True),
        sa.Column("alarm", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["monitor_id"], ["drift_monitors.id"], name="fk_drift_points_monitor_id_drift_monitors",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_drift_points"),
    )
    op.create_index("ix_drift_points_monitor_id", "drift_points", ["monitor_id"])
    op.create_table(
        "drift_alarms",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("monitor_id", sa.Integer(), nullable=False),
        sa.Column("raised_at", _TS, nullable=False),
        sa.Column("at_study", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("acknowledged_by", sa.String(64), nullable=True),
        sa.Column("acknowledged_at", _TS, nullable=True),
        sa.ForeignKeyConstraint(["monitor_id"], ["drift_monitors.id"], name="fk_drift_alarms_monitor_id_drift_monitors",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_drift_alarms"),
    )
    op.create_index("ix_drift_alarms_monitor_id", "drift_alarms", ["monitor_id"])


def downgrade() -> None:
    """Drop the three drift tables."""
    op.drop_index("ix_drift_alarms_monitor_id", table_name="drift_alarms")
    op.drop_table("drift_alarms")
    op.drop_index("ix_drift_points_monitor_id", table_name="drift_points")
    op.drop_table("drift_points")
    op.drop_table("drift_monitors")
