"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-25 13:47:30.945221
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import core.db.base

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    
    op.create_table('organizations',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('created_at', core.db.base.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_organizations')),
    sa.UniqueConstraint('id', name=op.f('uq_organizations_id')),
    sa.UniqueConstraint('name', name=op.f('uq_organizations_name'))
    )
    op.create_table('api_keys',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('org_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('prefix', sa.String(length=32), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=True),
    sa.Column('created_at', core.db.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', core.db.base.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['org_pk'], ['organizations.pk'], name=op.f('fk_api_keys_org_pk_organizations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_api_keys')),
    sa.UniqueConstraint('id', name=op.f('uq_api_keys_id')),
    sa.UniqueConstraint('prefix', name=op.f('uq_api_keys_prefix'))
    )
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_keys_org_pk'), ['org_pk'], unique=False)

    op.create_table('files',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('org_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('filename', sa.String(length=512), nullable=False),
    sa.Column('purpose', sa.String(length=32), nullable=False),
    sa.Column('bytes', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('status_details', sa.Text(), nullable=True),
    sa.Column('storage_key', sa.String(length=256), nullable=False),
    sa.Column('created_at', core.db.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', core.db.base.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['org_pk'], ['organizations.pk'], name=op.f('fk_files_org_pk_organizations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_files')),
    sa.UniqueConstraint('id', name=op.f('uq_files_id'))
    )
    with op.batch_alter_table('files', schema=None) as batch_op:
        batch_op.create_index('ix_files_org_pk_pk', ['org_pk', 'pk'], unique=False)

    op.create_table('jobs',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('org_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('model', sa.String(length=256), nullable=False),
    sa.Column('training_file', sa.String(length=64), nullable=False),
    sa.Column('validation_file', sa.String(length=64), nullable=True),
    sa.Column('suffix', sa.String(length=64), nullable=True),
    sa.Column('seed', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('error', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('fine_tuned_model', sa.String(length=512), nullable=True),
    sa.Column('created_at', core.db.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('started_at', core.db.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('finished_at', core.db.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('estimated_finish', core.db.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('trained_tokens', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('method', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('resolved_config', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('openrft', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('metadata', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('integrations', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('result_files', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('task_id', sa.String(length=64), nullable=True),
    sa.Column('pause_requested', sa.Boolean(), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('worker', sa.String(length=256), nullable=True),
    sa.Column('heartbeat_at', core.db.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('snapshot_path', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['org_pk'], ['organizations.pk'], name=op.f('fk_jobs_org_pk_organizations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_jobs')),
    sa.UniqueConstraint('id', name=op.f('uq_jobs_id'))
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index('ix_jobs_org_pk_pk', ['org_pk', 'pk'], unique=False)
        batch_op.create_index('ix_jobs_status', ['status'], unique=False)

    op.create_table('checkpoints',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('job_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('step_number', sa.Integer(), nullable=False),
    sa.Column('fine_tuned_model_checkpoint', sa.String(length=512), nullable=False),
    sa.Column('metrics', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('created_at', core.db.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_pk'], ['jobs.pk'], name=op.f('fk_checkpoints_job_pk_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_checkpoints')),
    sa.UniqueConstraint('id', name=op.f('uq_checkpoints_id')),
    sa.UniqueConstraint('job_pk', 'step_number', name='uq_checkpoints_job_step')
    )
    with op.batch_alter_table('checkpoints', schema=None) as batch_op:
        batch_op.create_index('ix_checkpoints_job_pk_pk', ['job_pk', 'pk'], unique=False)

    op.create_table('fine_tuned_models',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('id', sa.String(length=512), nullable=False),
    sa.Column('org_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('job_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('base_model', sa.String(length=256), nullable=False),
    sa.Column('parent', sa.String(length=512), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('step_number', sa.Integer(), nullable=True),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('created_at', core.db.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_pk'], ['jobs.pk'], name=op.f('fk_fine_tuned_models_job_pk_jobs'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['org_pk'], ['organizations.pk'], name=op.f('fk_fine_tuned_models_org_pk_organizations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_fine_tuned_models')),
    sa.UniqueConstraint('id', name=op.f('uq_fine_tuned_models_id'))
    )
    with op.batch_alter_table('fine_tuned_models', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_fine_tuned_models_job_pk'), ['job_pk'], unique=False)
        batch_op.create_index('ix_fine_tuned_models_org_pk_pk', ['org_pk', 'pk'], unique=False)

    op.create_table('job_events',
    sa.Column('pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('job_pk', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('created_at', core.db.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('level', sa.String(length=8), nullable=False),
    sa.Column('type', sa.String(length=16), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('data', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.ForeignKeyConstraint(['job_pk'], ['jobs.pk'], name=op.f('fk_job_events_job_pk_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('pk', name=op.f('pk_job_events')),
    sa.UniqueConstraint('id', name=op.f('uq_job_events_id'))
    )
    with op.batch_alter_table('job_events', schema=None) as batch_op:
        batch_op.create_index('ix_job_events_job_pk_pk', ['job_pk', 'pk'], unique=False)

    


def downgrade() -> None:
    
    with op.batch_alter_table('job_events', schema=None) as batch_op:
        batch_op.drop_index('ix_job_events_job_pk_pk')

    op.drop_table('job_events')
    with op.batch_alter_table('fine_tuned_models', schema=None) as batch_op:
        batch_op.drop_index('ix_fine_tuned_models_org_pk_pk')
        batch_op.drop_index(batch_op.f('ix_fine_tuned_models_job_pk'))

    op.drop_table('fine_tuned_models')
    with op.batch_alter_table('checkpoints', schema=None) as batch_op:
        batch_op.drop_index('ix_checkpoints_job_pk_pk')

    op.drop_table('checkpoints')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_status')
        batch_op.drop_index('ix_jobs_org_pk_pk')

    op.drop_table('jobs')
    with op.batch_alter_table('files', schema=None) as batch_op:
        batch_op.drop_index('ix_files_org_pk_pk')

    op.drop_table('files')
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_api_keys_org_pk'))

    op.drop_table('api_keys')
    op.drop_table('organizations')
    
