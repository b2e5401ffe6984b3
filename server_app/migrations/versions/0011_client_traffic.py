"""client_traffic: bytes and packets per gateway, client address and minute

Agents that announce the "clients" feature send clients frames (docs/protocol.md, "clients"): what each client
address sent and received through the gateway. Stored like traffic_samples (per minute, rolled up into hours past
25 h, pruned after traffic_retention_days); a new table, so existing rows are untouched.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 15:30:00

"""
from alembic import op
import sqlalchemy as sa

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'client_traffic',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('gateway', sa.String(length=128), nullable=False),
        sa.Column('client', sa.String(length=64), nullable=False),
        sa.Column('minute', sa.DateTime(), nullable=False),
        sa.Column('out_bytes', sa.BigInteger(), nullable=False),
        sa.Column('in_bytes', sa.BigInteger(), nullable=False),
        sa.Column('out_packets', sa.BigInteger(), nullable=False),
        sa.Column('in_packets', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('gateway', 'client', 'minute', name='uq_client_traffic_minute')
    )
    with op.batch_alter_table('client_traffic', schema=None) as batch_op:
        batch_op.create_index('ix_client_traffic_minute', ['minute'], unique=False)
        batch_op.create_index(batch_op.f('ix_client_traffic_client'), ['client'], unique=False)


def downgrade():
    with op.batch_alter_table('client_traffic', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_client_traffic_client'))
        batch_op.drop_index('ix_client_traffic_minute')
    op.drop_table('client_traffic')
