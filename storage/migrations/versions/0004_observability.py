"""observability: the MLflow run of a training run; indexes for the gauges read at each scrape

Revision ID: 0004
Revises: 0002
"""

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('training_run', schema=None) as batch_op:
        batch_op.add_column(sa.Column('mlflow_run', sa.JSON(), nullable=True))
    with op.batch_alter_table('preference_pair', schema=None) as batch_op:
        batch_op.create_index('ix_pair_status_source', ['status', 'source'], unique=False)
    with op.batch_alter_table('interaction', schema=None) as batch_op:
        batch_op.create_index('ix_interaction_served_created', ['served_model', 'created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('interaction', schema=None) as batch_op:
        batch_op.drop_index('ix_interaction_served_created')
    with op.batch_alter_table('preference_pair', schema=None) as batch_op:
        batch_op.drop_index('ix_pair_status_source')
    with op.batch_alter_table('training_run', schema=None) as batch_op:
        batch_op.drop_column('mlflow_run')
