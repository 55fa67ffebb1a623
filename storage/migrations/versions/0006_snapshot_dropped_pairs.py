"""dataset_snapshot: how many approved pairs were left out of it, by reason

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 06:30:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('dataset_snapshot', sa.Column('dropped', sa.JSON(), nullable=False, server_default='{}'))


def downgrade() -> None:
    with op.batch_alter_table('dataset_snapshot') as batch:  # SQLite drops a column by copying the table
        batch.drop_column('dropped')
