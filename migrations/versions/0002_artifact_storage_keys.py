"""storage keys of job snapshots and fine-tuned models

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('snapshot_key', sa.String(length=512), nullable=True))
    with op.batch_alter_table('fine_tuned_models', schema=None) as batch_op:
        batch_op.add_column(sa.Column('storage_key', sa.String(length=512), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('fine_tuned_models', schema=None) as batch_op:
        batch_op.drop_column('storage_key')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('snapshot_key')
