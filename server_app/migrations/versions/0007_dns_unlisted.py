"""dns_unlisted: the names no entry allows that the gateways' DNS forwarders were asked for

og-dns counts, per name, the queries that match no domain entry and the agent sends the counts in its learned
frames ("unlisted", docs/protocol.md). The server keeps them per gateway and name (count, first and last seen),
bounded by dns_unlisted_max_rows and dns_unlisted_retention_days; dns_unlisted_batches remembers each gateway's
newest batches, so a frame sent again (its ack lost) is not counted twice. services/unlisted.py has the rules.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 16:00:00

"""
from alembic import op
import sqlalchemy as sa

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'dns_unlisted',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('gateway', sa.String(length=128), nullable=False),
        sa.Column('name', sa.String(length=255), nullable=False),
        sa.Column('count', sa.BigInteger(), nullable=False),
        sa.Column('first_seen', sa.DateTime(), nullable=False),
        sa.Column('last_seen', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('gateway', 'name', name='uq_dns_unlisted_name')
    )
    with op.batch_alter_table('dns_unlisted', schema=None) as batch_op:
        batch_op.create_index('ix_dns_unlisted_last_seen', ['last_seen', 'id'], unique=False)
        batch_op.create_index('ix_dns_unlisted_count', ['count'], unique=False)
    op.create_table(
        'dns_unlisted_batches',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('gateway', sa.String(length=128), nullable=False),
        sa.Column('batch', sa.String(length=128), nullable=False),
        sa.Column('at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('gateway', 'batch', name='uq_dns_unlisted_batch'),
        sqlite_autoincrement=True
    )
    with op.batch_alter_table('dns_unlisted_batches', schema=None) as batch_op:
        batch_op.create_index('ix_dns_unlisted_batches_gateway_id', ['gateway', 'id'], unique=False)


def downgrade():
    with op.batch_alter_table('dns_unlisted_batches', schema=None) as batch_op:
        batch_op.drop_index('ix_dns_unlisted_batches_gateway_id')
    op.drop_table('dns_unlisted_batches')
    with op.batch_alter_table('dns_unlisted', schema=None) as batch_op:
        batch_op.drop_index('ix_dns_unlisted_count')
        batch_op.drop_index('ix_dns_unlisted_last_seen')
    op.drop_table('dns_unlisted')
