"""feedback: a review status (votes are curated before they teach KTO); dataset_snapshot: the votes in it

Existing votes become pending: nobody has reviewed them, and only reviewed votes feed a KTO run by default.
The run kind "kto" needs no change here: run kinds are a VARCHAR(20) without a CHECK constraint.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 16:50:00
"""

from alembic import op
import sqlalchemy as sa

import storage.models


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

REVIEW_STATUS = sa.Enum('pending', 'approved', 'rejected', name='pairstatus', native_enum=False, length=20)


def upgrade() -> None:
    with op.batch_alter_table('feedback') as batch:
        batch.add_column(sa.Column('status', REVIEW_STATUS, nullable=False, server_default='pending'))
        batch.add_column(sa.Column('reviewer', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('reviewed_at', storage.models.UTCDateTime(timezone=True), nullable=True))
        batch.create_index('ix_feedback_status_id', ['status', 'id'], unique=False)
    op.add_column('dataset_snapshot', sa.Column('feedback_ids', sa.JSON(), nullable=False, server_default='[]'))


def downgrade() -> None:
    with op.batch_alter_table('dataset_snapshot') as batch:  # SQLite drops a column by copying the table
        batch.drop_column('feedback_ids')
    with op.batch_alter_table('feedback') as batch:
        batch.drop_index('ix_feedback_status_id')
        batch.drop_column('reviewed_at')
        batch.drop_column('reviewer')
        batch.drop_column('status')
