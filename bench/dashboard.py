"""Review-queue query time and page render time with many pairs, on SQLite and PostgreSQL.

    python -m bench.dashboard [--pairs 100000] [--repeats 7] [--pg-dsn postgresql://postgres@127.0.0.1:5432/test]

Keyset pagination should make the oldest page cost about what the newest does; the ratios in the
last column are measured side by side in this run (first page = 1.00).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from datetime import timedelta
from itertools import islice
from pathlib import Path

import psycopg
from sqlalchemy import insert

from flywheel.settings import get_settings
from storage.db import make_engine, session_scope, upgrade
from storage.models import PairSource, PairStatus, PreferencePair, utcnow
from storage.pairs import PairFilter, count_pairs, dedupe_key, list_pairs
from storage.users import Role, create_user, get_actor

APP = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
PAGE = 25
BENCH_USER = ("bench", "bench-password")


def pair_rows(count: int):
    for n in range(count):
        prompt = [{"role": "user", "content": f"How do I restart service {n}?"}]
        chosen, rejected = f"Run `systemctl restart svc{n}`.", f"Reboot the machine {n}."
        yield {"prompt": prompt, "chosen": chosen, "rejected": rejected, "source": PairSource.imported,
               "status": PairStatus.pending, "dedupe_key": dedupe_key(prompt, chosen, rejected),
               "channel_id": f"C{n % 7}", "created_at": utcnow()}


def fill(url: str, count: int) -> float:
    """Migrate, add the bench's reviewer account and `count` pending pairs. The pairs go in through
    the ORM's bulk insert: create_pair's savepoint per pair takes minutes at 100k on a busy machine."""
    upgrade(url)
    engine = make_engine(url)
    started, rows = time.perf_counter(), pair_rows(count)
    with session_scope(engine) as session:
        create_user(session, *BENCH_USER, Role.reviewer)
    while chunk := list(islice(rows, 10_000)):
        with session_scope(engine) as session:
            session.execute(insert(PreferencePair), chunk)
    engine.dispose()
    return time.perf_counter() - started


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time in ms (one warm-up call first)."""
    fn()
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def query_rows(url: str, repeats: int) -> list[tuple[str, float]]:
    engine = make_engine(url)

    def run(query):
        return lambda: _in_session(engine, query)

    with session_scope(engine) as session:
        ids = [p.id for p in list_pairs(session, limit=1)]
    newest = ids[0]
    rows = [
        ("list_pairs: newest page", timed(run(lambda s: list_pairs(s, limit=PAGE)), repeats)),
        ("list_pairs: middle page (keyset)", timed(run(lambda s: list_pairs(s, limit=PAGE, before_id=newest // 2)), repeats)),
        ("list_pairs: oldest page (keyset)", timed(run(lambda s: list_pairs(s, limit=PAGE, before_id=PAGE + 1)), repeats)),
        ("list_pairs: source + date filter", timed(run(lambda s: list_pairs(
            s, PairFilter(source=PairSource.imported, since=utcnow() - timedelta(days=1)), limit=PAGE)), repeats)),
        ("list_pairs: text search", timed(run(lambda s: list_pairs(s, PairFilter(text="svc4242"), limit=PAGE)), repeats)),
        ("count_pairs: pending", timed(run(lambda s: count_pairs(s, PairFilter())), repeats)),
    ]
    engine.dispose()
    return rows


def _in_session(engine, query):
    with session_scope(engine) as session:
        return query(session)


def render_rows(url: str, home: Path, repeats: int) -> list[tuple[str, float]]:
    """Full script runs of the review queue and the overview through Streamlit's AppTest."""
    from streamlit.testing.v1 import AppTest  # imported late: it configures Streamlit for testing

    os.environ.update(FLYWHEEL_DATABASE_URL=url, FLYWHEEL_HOME=str(home))
    get_settings.cache_clear()
    at = AppTest.from_file(str(APP), default_timeout=300)
    at.session_state["actor"] = _in_session(make_engine(url), lambda s: get_actor(s, BENCH_USER[0]))
    at.run()
    rows = []
    for page in ("review", "overview"):
        at.switch_page(f"views/{page}.py")
        rows.append((f"page render: {page} ({'10 pairs' if page == 'review' else 'plots'})",
                     timed(lambda: at.run(), repeats)))
        assert not at.exception, at.exception
    return rows


@contextmanager
def postgres_database(dsn: str):
    name = f"fw_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    try:
        yield f"postgresql+psycopg://{info.get('user', 'postgres')}@{info.get('host', '127.0.0.1')}:{info.get('port', 5432)}/{name}"
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def bench_backend(label: str, url: str, home: Path, pairs: int, repeats: int) -> list[tuple[str, str, float]]:
    print(f"{label}: inserting {pairs:,} pairs …", flush=True)
    seconds = fill(url, pairs)
    print(f"{label}: inserted in {seconds:.1f} s", flush=True)
    rows = query_rows(url, repeats) + render_rows(url, home, repeats)
    return [(label, name, ms) for name, ms in rows]


def print_table(rows: list[tuple[str, str, float]]) -> None:
    first = {label: ms for label, name, ms in rows if name == "list_pairs: newest page"}
    print(f"\n{'backend':<11} {'operation':<40} {'median ms':>10} {'x newest page':>14}")
    for label, name, ms in rows:
        print(f"{label:<11} {name:<40} {ms:>10.2f} {ms / first[label]:>14.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--pg-dsn", default=os.environ.get("FLYWHEEL_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        rows += bench_backend("sqlite", f"sqlite:///{home / 'bench.db'}", home, args.pairs, args.repeats)
        if not args.no_postgres:
            with postgres_database(args.pg_dsn) as url:
                rows += bench_backend("postgresql", url, home, args.pairs, args.repeats)
    print_table(rows)


if __name__ == "__main__":
    main()
