"""blocked_attempts and the gateways' mode: what gateways refused, and observe mode

Each agent reports the new connections its gateway refused (or, in observe mode, let through) per client
address, destination, protocol and port (`blocked` frames, docs/protocol.md); the server sums them in
blocked_attempts, one row per gateway and (client, destination, proto, port, observed), bounded by
blocked_max_rows and blocked_retention_days (services/blocked.py, pruned by the housekeeper). gateways.mode is
the mode set through the API ("" = the agent's own), gateways.running_mode what the agent said it runs.

Revision ID: 0008
Revises: 0007 (the lead re-chains it after 0007)
Create Date: 2026-12-03 16:00:00

"""
from alembic import op
import sqlalchemy as sa

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'blocked_attempts',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('gateway', sa.String(length=128), nullable=False),
        sa.Column('client', sa.String(length=64), nullable=False),
        sa.Column('destination', sa.String(length=64), nullable=False),
        sa.Column('proto', sa.String(length=16), nullable=False),
        sa.Column('port', sa.String(length=32), nullable=False),
        sa.Column('observed', sa.Boolean(), nullable=False),
        sa.Column('count', sa.BigInteger(), nullable=False),
        sa.Column('bytes', sa.BigInteger(), nullable=False),
        sa.Column('first_seen', sa.DateTime(), nullable=False),
        sa.Column('last_seen', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('gateway', 'client', 'destination', 'proto', 'port', 'observed',
                            name='uq_blocked_attempt'),
    )
    with op.batch_alter_table('blocked_attempts') as batch:
        batch.create_index('ix_blocked_last_seen', ['last_seen'], unique=False)
        batch.create_index('ix_blocked_observed_last_seen', ['observed', 'last_seen'], unique=False)
        batch.create_index('ix_blocked_observed_count', ['observed', 'count'], unique=False)
        batch.create_index(batch.f('ix_blocked_attempts_gateway'), ['gateway'], unique=False)
        batch.create_index(batch.f('ix_blocked_attempts_client'), ['client'], unique=False)
        batch.create_index(batch.f('ix_blocked_attempts_destination'), ['destination'], unique=False)
    with op.batch_alter_table('gateways') as batch:
        batch.add_column(sa.Column('mode', sa.String(length=16), nullable=False, server_default=''))
        batch.add_column(sa.Column('running_mode', sa.String(length=16), nullable=False, server_default=''))


def downgrade():
    # SQLite drops a column by rebuilding the table: keep 0002's AUTOINCREMENT on the rebuilt one.
    with op.batch_alter_table('gateways', table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_column('running_mode')
        batch.drop_column('mode')
    op.drop_table('blocked_attempts')
