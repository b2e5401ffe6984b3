"""dns_answers: which names each gateway's DNS forwarder answered with which addresses

og-dns spools, per query name, the addresses its forwarded answers gave (listed names and unlisted ones) and the
agent sends them in its learned frames ("answers", docs/protocol.md). The server keeps one row per gateway,
address and name (first and last seen), bounded by dns_answers_max_rows and dns_answers_retention_days, so that
the Blocked page names a refused destination by the names that led clients to it. services/answers.py has the
rules.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 15:00:00

"""
from alembic import op
import sqlalchemy as sa

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'dns_answers',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('gateway', sa.String(length=128), nullable=False),
        sa.Column('address', sa.String(length=64), nullable=False),
        sa.Column('name', sa.String(length=255), nullable=False),
        sa.Column('first_seen', sa.DateTime(), nullable=False),
        sa.Column('last_seen', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('gateway', 'address', 'name', name='uq_dns_answer')
    )
    with op.batch_alter_table('dns_answers', schema=None) as batch_op:
        batch_op.create_index('ix_dns_answers_last_seen', ['last_seen', 'id'], unique=False)
        batch_op.create_index('ix_dns_answers_name', ['name'], unique=False)


def downgrade():
    with op.batch_alter_table('dns_answers', schema=None) as batch_op:
        batch_op.drop_index('ix_dns_answers_name')
        batch_op.drop_index('ix_dns_answers_last_seen')
    op.drop_table('dns_answers')
