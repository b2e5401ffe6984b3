"""audit_events: the target an event concerns, its outcome and the reason of a refusal

Refused actions are audited too (a login while the account is locked, a delete of an undeletable entry, an
add of an internal address, a role's forbidden attempt): `outcome` is "done" for what happened and "refused"
for what was refused, `reason` the refusal's message as the actor saw it. `target` is the human name of what
the event concerns (an entry's target, a user name, a token name, or the value a refused request named), so the
audit log filters by it; older events get "" (their before/after still name it).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 16:00:00

"""
from alembic import op
import sqlalchemy as sa

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('audit_events') as batch:
        batch.add_column(sa.Column('target', sa.String(length=255), nullable=False, server_default=''))
        batch.add_column(sa.Column('outcome', sa.String(length=16), nullable=False, server_default='done'))
        batch.add_column(sa.Column('reason', sa.Text(), nullable=True))
        batch.create_index(batch.f('ix_audit_events_target'), ['target'], unique=False)


def downgrade():
    with op.batch_alter_table('audit_events') as batch:
        batch.drop_index(batch.f('ix_audit_events_target'))
        batch.drop_column('reason')
        batch.drop_column('outcome')
        batch.drop_column('target')
