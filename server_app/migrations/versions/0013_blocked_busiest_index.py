"""blocked_attempts: the busiest ordering served by one index (observed, count, last_seen, id)

The Blocked page's "busiest first" orders by count, then last_seen, then id. With an index on (observed, count)
only, the database read every row of the busiest counts to sort them by last_seen (counts take few values: 28-79
ms at 100,000 rows, bench/results/blocked.md); the index now carries the whole ordering and the page reads its 50
rows off it. It replaces ix_blocked_observed_count, of which it is a prefix.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-08 03:45:00

"""
from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('blocked_attempts', schema=None) as batch_op:
        batch_op.create_index('ix_blocked_observed_count_last_seen', ['observed', 'count', 'last_seen', 'id'],
                              unique=False)
        batch_op.drop_index('ix_blocked_observed_count')


def downgrade():
    with op.batch_alter_table('blocked_attempts', schema=None) as batch_op:
        batch_op.create_index('ix_blocked_observed_count', ['observed', 'count'], unique=False)
        batch_op.drop_index('ix_blocked_observed_count_last_seen')
