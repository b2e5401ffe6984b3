"""entry_addresses: addresses learned through a gateway's DNS forwarder

og-dns on a gateway learns the addresses its clients resolve for a domain entry (wildcards included) and the
agent sends them to the server (`learned` frames, docs/protocol.md). The server stores them as EntryAddress
rows of source "learned": `learned_via` names the gateway whose DNS learned the address (empty for other
sources) and `expires_at` is when the learned answer's TTL (plus og-dns's hold) ends; housekeeping removes a
learned row once that has passed. services/learned.py has the rules.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 12:30:00

"""
from alembic import op
import sqlalchemy as sa

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('entry_addresses') as batch:
        batch.add_column(sa.Column('learned_via', sa.String(length=128), nullable=False, server_default=''))
        batch.add_column(sa.Column('expires_at', sa.DateTime(), nullable=True))
        # The housekeeper looks for expired learned rows every second.
        batch.create_index(batch.f('ix_entry_addresses_expires_at'), ['expires_at'], unique=False)


def downgrade():
    with op.batch_alter_table('entry_addresses') as batch:
        batch.drop_index(batch.f('ix_entry_addresses_expires_at'))
        batch.drop_column('expires_at')
        batch.drop_column('learned_via')
