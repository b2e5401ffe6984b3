"""gateways: which replica holds each gateway's session, and the session's id

Replicas share the database, and a row's `connected` flag outlived the process that set it: a restarted
server showed its gateways connected before they had said hello again. With the holder recorded, a replica
clears its own previous sessions when it starts (and no other replica's), and a session only ends its own
row (not a newer session of the same gateway on another replica). services/gateways.py has the rules.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 23:00:00

"""
from alembic import op
import sqlalchemy as sa

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    # Rows of sessions from before this revision have no holder: no replica clears them at start-up, and the
    # fleet view shows them disconnected once their last_seen is older than the dead-after interval.
    with op.batch_alter_table('gateways') as batch:
        batch.add_column(sa.Column('session_replica', sa.String(length=128), nullable=False, server_default=''))
        batch.add_column(sa.Column('session_id', sa.String(length=32), nullable=False, server_default=''))


def downgrade():
    # SQLite drops a column by rebuilding the table: keep 0002's AUTOINCREMENT on the rebuilt one.
    with op.batch_alter_table('gateways', table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_column('session_id')
        batch.drop_column('session_replica')
