"""shared risk models: ``risk_models`` holds a covariance once, and a recommendation of a batch
references it (``recommendations.risk_model_id``) instead of repeating it in its ``request``.

A batch of 10,000 accounts of 50 instruments stored the same 55 KB covariance 10,000 times
(about 45 % of each stored recommendation). With this revision a recommendation whose
``risk_model_id`` is set keeps its request without the ``risk_model`` key; the full request is
``request || jsonb_build_object('risk_model', risk_models.content)``. Rows without the reference
(every recommendation written before, and the live path) are unchanged.

Downgrade puts the covariance back into every referencing request before dropping the table.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 09:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_FK = "fk_recommendations_risk_model_id_risk_models"


def upgrade() -> None:
    op.create_table(
        "risk_models",
        sa.Column("id", postgresql.UUID(as_uuid=True), nullable=False),
        sa.Column("tenant_id", sa.Text, nullable=False),
        sa.Column("as_of", sa.Date, nullable=False),
        sa.Column("content", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_risk_models")),
    )
    op.create_index(op.f("ix_risk_models_tenant_id"), "risk_models", ["tenant_id"], unique=False)
    op.add_column(
        "recommendations",
        sa.Column(
            "risk_model_id",
            postgresql.UUID(as_uuid=True),
            sa.ForeignKey("risk_models.id", name=op.f(_FK)),
            nullable=True,
        ),
    )


def downgrade() -> None:
    op.execute(
        "UPDATE recommendations AS r "
        "SET request = r.request || jsonb_build_object('risk_model', m.content) "
        "FROM risk_models AS m WHERE r.risk_model_id = m.id"
    )
    op.drop_constraint(op.f(_FK), "recommendations", type_="foreignkey")
    op.drop_column("recommendations", "risk_model_id")
    op.drop_index(op.f("ix_risk_models_tenant_id"), table_name="risk_models")
    op.drop_table("risk_models")
