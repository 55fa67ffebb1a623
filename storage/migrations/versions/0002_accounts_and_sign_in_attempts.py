"""accounts: enabled flag and last sign-in; sign-in attempts for the lockout

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 23:10:05.052252
"""

from alembic import op
import sqlalchemy as sa
import storage.models


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('sign_in_attempt',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('client', sa.String(length=64), nullable=False),
    sa.Column('outcome', sa.Enum('ok', 'failed', 'locked', name='signinoutcome', native_enum=False, length=20),
              nullable=False),
    sa.Column('created_at', storage.models.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('sign_in_attempt', schema=None) as batch_op:
        batch_op.create_index('ix_sign_in_attempt_client', ['client', 'created_at'], unique=False)
        batch_op.create_index('ix_sign_in_attempt_username', ['username', 'created_at'], unique=False)

    with op.batch_alter_table('app_user', schema=None) as batch_op:
        # Existing accounts stay enabled.
        batch_op.add_column(sa.Column('enabled', sa.Boolean(), server_default=sa.true(), nullable=False))
        batch_op.add_column(sa.Column('last_sign_in_at', storage.models.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('app_user', schema=None) as batch_op:
        batch_op.drop_column('last_sign_in_at')
        batch_op.drop_column('enabled')

    with op.batch_alter_table('sign_in_attempt', schema=None) as batch_op:
        batch_op.drop_index('ix_sign_in_attempt_username')
        batch_op.drop_index('ix_sign_in_attempt_client')

    op.drop_table('sign_in_attempt')
