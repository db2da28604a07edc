"""The migrations apply with the Supabase CLI (`supabase db push`) as with `pennybot migrate`."""

import shutil
import subprocess
import uuid
from pathlib import Path

import psycopg

from budget.stores import open_database
from tests.conftest import require_server

ROOT = Path(__file__).parents[2]
CLI = ROOT / "node_modules/.bin/supabase"


def columns(dsn: str) -> set[tuple[str, str, str]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "select table_name, column_name, data_type from information_schema.columns where table_schema = 'public'"
            " and table_name <> 'pennybot_migrations'"
        ).fetchall()
    return {tuple(r) for r in rows}  # type: ignore[misc]


async def test_supabase_db_push_and_pennybot_migrate_build_the_same_schema(pg_dsn: str, tmp_path: Path) -> None:
    require_server(CLI.exists(), "the Supabase CLI (scripts/test.sh installs it with npm)")
    admin = pg_dsn.rsplit("/", 1)[0] + "/postgres"
    names = [f"pb_cli_{uuid.uuid4().hex[:8]}", f"pb_mig_{uuid.uuid4().hex[:8]}"]
    with psycopg.connect(admin, autocommit=True) as conn:
        for name in names:
            conn.execute(f"create database {name}")  # type: ignore[arg-type]
    pushed, migrated = (admin.rsplit("/", 1)[0] + f"/{n}" for n in names)
    try:
        shutil.copytree(ROOT / "supabase", tmp_path / "supabase")
        for attempt in range(2):  # twice: the second finds nothing to apply
            done = subprocess.run(
                [str(CLI), "db", "push", "--db-url", pushed, "--yes"],
                cwd=tmp_path, capture_output=True, text=True, timeout=180,
            )  # fmt: skip
            assert done.returncode == 0, done.stdout + done.stderr
            if attempt == 1:
                assert "up to date" in (done.stdout + done.stderr).lower()
        with psycopg.connect(pushed) as conn:
            applied = conn.execute("select version from supabase_migrations.schema_migrations order by 1").fetchall()
        files = (ROOT / "supabase/migrations").glob("*.sql")
        assert [v for (v,) in applied] == sorted(p.name.split("_")[0] for p in files)
        db = open_database(migrated)
        await db.migrate()
        await db.aclose()
        assert columns(pushed) == columns(migrated)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            for name in names:
                conn.execute(f"drop database if exists {name} with (force)")  # type: ignore[arg-type]
