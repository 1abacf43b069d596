"""Apply migrations/NNN_*.sql to PostgreSQL, in order, once each.

Applied files are recorded in the table schema_migrations. With DATA=<tenant> the migrations run in
that tenant's own schema (created if missing). Exits non-zero on the first failure (that file's
transaction is rolled back).

A database that cannot be reached yet is waited for, up to CONNECT_WAIT seconds (default 20): a job's
task that has just started on a node may not resolve the overlay network's names for a moment
("Temporary failure in name resolution"), and the database may be restarting.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

import psycopg2

HERE = Path(__file__).resolve().parent
MIGRATIONS = Path(os.environ.get("MIGRATIONS_DIR", HERE / "migrations"))
NAME = re.compile(r"^\d{3}_[A-Za-z0-9_]+\.sql$")


def connect(url: str, wait: float):
    """A connection, or None after `wait` seconds of failures (each reported once, the last in full)."""
    deadline = time.monotonic() + wait
    said = None
    while True:
        try:
            return psycopg2.connect(url, connect_timeout=10)
        except psycopg2.Error as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            final = not isinstance(e, psycopg2.OperationalError) or any(
                w in first for w in ("authentication failed", "does not exist", "no password"))
            if final or time.monotonic() >= deadline:
                print(f"migrate: cannot connect: {first}", file=sys.stderr)
                return None
            if first != said:
                print(f"migrate: waiting for the database ({first})", file=sys.stderr, flush=True)
                said = first
            time.sleep(1)


def main() -> int:
    url = os.environ.get("DATABASE_URL")
    if not url:
        print("migrate: DATABASE_URL is not set", file=sys.stderr)
        return 2
    tenant = os.environ.get("DATA", "").strip()
    if tenant and not re.fullmatch(r"[a-z][a-z0-9_]{0,62}", tenant):
        print(f"migrate: DATA={tenant!r} is not a valid tenant name", file=sys.stderr)
        return 2
    schema = tenant or "public"
    files = sorted(p for p in MIGRATIONS.glob("*.sql") if NAME.match(p.name))
    conn = connect(url, float(os.environ.get("CONNECT_WAIT", "20")))
    if conn is None:
        return 1
    applied_now = 0
    with conn:
        with conn.cursor() as cur:
            cur.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
            cur.execute(f'SET search_path TO "{schema}"')
            cur.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                        "(name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())")
            cur.execute("SELECT name FROM schema_migrations")
            done = {r[0] for r in cur.fetchall()}
    for f in files:
        if f.name in done:
            continue
        try:
            with conn:
                with conn.cursor() as cur:
                    cur.execute(f'SET search_path TO "{schema}"')
                    cur.execute(f.read_text())
                    cur.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (f.name,))
        except psycopg2.Error as e:
            print(f"migrate: {f.name} failed in schema {schema}: {str(e).strip().splitlines()[0]}",
                  file=sys.stderr)
            return 1
        applied_now += 1
        print(f"migrate: applied {f.name} in schema {schema}")
    print(f"migrate: schema {schema} is up to date ({applied_now} applied now, {len(files)} in total)")
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
