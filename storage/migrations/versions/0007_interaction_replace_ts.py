"""interaction: the message a Try again answers in place of (questions are queued through the database)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 15:40:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('interaction', sa.Column('replace_ts', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('interaction') as batch:  # SQLite drops a column by copying the table
        batch.drop_column('replace_ts')
