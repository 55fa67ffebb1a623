"""bot: the ts of the asking message, and an index for questions still waiting for an answer

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 23:50:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('interaction', sa.Column('question_ts', sa.String(length=64), nullable=True))
    op.create_index('ix_interaction_status_created', 'interaction', ['status', 'created_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_interaction_status_created', table_name='interaction')
    with op.batch_alter_table('interaction') as batch:  # SQLite drops a column by copying the table
        batch.drop_column('question_ts')
