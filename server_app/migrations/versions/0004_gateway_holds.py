"""gateways.holds: what each agent says it holds (its address families and internal networks)

The server filters the published set the same way to know the digest each gateway should report and which
elements it does not enforce (docs/protocol.md, "holds"). Existing rows get "": an agent that has not said
(an older agent, or one not connected since the upgrade) is compared with the whole published set, as before.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 23:00:00

"""
from alembic import op
import sqlalchemy as sa

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade():
    # ADD COLUMN with a default: no table rebuild on SQLite (which would need 0002's AUTOINCREMENT again).
    with op.batch_alter_table('gateways') as batch_op:
        batch_op.add_column(sa.Column('holds', sa.Text(), nullable=False, server_default=''))


def downgrade():
    with op.batch_alter_table('gateways') as batch_op:
        batch_op.drop_column('holds')
