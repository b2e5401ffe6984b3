"""gateways.kernel_diff: what each gateway's kernel lacked or held beyond its applied set at its last ack

Agents that announce the "differs" feature name these elements in their acks (docs/protocol.md, "ack"); the
fleet view shows them as missing and extra instead of a bare "differs". Existing rows get "": not said.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03 16:00:00

"""
from alembic import op
import sqlalchemy as sa

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade():
    # ADD COLUMN with a default: no table rebuild on SQLite (which would need 0002's AUTOINCREMENT again).
    with op.batch_alter_table('gateways') as batch_op:
        batch_op.add_column(sa.Column('kernel_diff', sa.Text(), nullable=False, server_default=''))


def downgrade():
    with op.batch_alter_table('gateways') as batch_op:
        batch_op.drop_column('kernel_diff')
