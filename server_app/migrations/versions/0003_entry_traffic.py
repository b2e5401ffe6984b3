"""entry traffic recorded when it happens

Traffic used to be joined to entries through entry_elements when a page was shown: the traffic of a deleted
or expired entry then belonged to no entry, and an address that two entries produce showed its bytes twice
without saying so. entry_traffic keeps, per entry, gateway and minute, the bytes its elements carried, split
into those of elements it alone produced and those it shared; entry_id is no foreign key, so the rows outlive
the entry, whose name is kept with them. Older samples stay per element only (top destinations).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 23:00:00

"""
from alembic import op
import sqlalchemy as sa

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'entry_traffic',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('entry_id', sa.Integer(), nullable=False),
        sa.Column('entry', sa.String(length=255), nullable=False),
        sa.Column('gateway', sa.String(length=128), nullable=False),
        sa.Column('minute', sa.DateTime(), nullable=False),
        sa.Column('shared', sa.Boolean(), nullable=False),
        sa.Column('out_bytes', sa.BigInteger(), nullable=False),
        sa.Column('in_bytes', sa.BigInteger(), nullable=False),
        sa.Column('out_packets', sa.BigInteger(), nullable=False),
        sa.Column('in_packets', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('entry_id', 'gateway', 'minute', 'shared', name='uq_entry_traffic_minute')
    )
    with op.batch_alter_table('entry_traffic', schema=None) as batch_op:
        batch_op.create_index('ix_entry_traffic_minute', ['minute'], unique=False)
        batch_op.create_index(batch_op.f('ix_entry_traffic_entry_id'), ['entry_id'], unique=False)


def downgrade():
    with op.batch_alter_table('entry_traffic', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_entry_traffic_entry_id'))
        batch_op.drop_index('ix_entry_traffic_minute')
    op.drop_table('entry_traffic')
