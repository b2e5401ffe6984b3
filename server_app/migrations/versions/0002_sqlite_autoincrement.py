"""SQLite: ids are never reused (AUTOINCREMENT)

Without AUTOINCREMENT, SQLite gives a new row the highest id + 1, so after the newest entry (token, user,
audit event) is deleted its id is handed out again, and the audit log's references become ambiguous.
PostgreSQL and MariaDB sequences never reuse ids: nothing to do there.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 10:25:00

"""
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

TABLES = ("entries", "tokens", "users", "audit_events", "gateways")


def upgrade():
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in TABLES:
        # Rebuilt with the same columns, constraints and indexes (the batch copies them), and the rows copied.
        with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_autoincrement": True}):
            pass


def downgrade():
    pass   # AUTOINCREMENT is harmless to keep
