"""The results store's schema and engine: SQLite by default (WAL, busy timeout, retries), any SQLAlchemy URL.

Tables:
  cells    one row per matrix cell: its config, state machine (pending -> running -> done|failed),
           claim (worker, heartbeat), attempts, duration, error line, log path
  runs     one row per finished pretraining cell: its run record (rsbench.contracts.run_record), run.json
           (cost), backbone.json, downsampled metrics.csv curves, corpus.json summary
  results  one row per results.jsonl row (typed key columns + the whole row as JSON), from a cell or
           an imported file (`source`); unique per source and row key so nothing is stored twice
"""

from __future__ import annotations

import functools
import random
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from sqlalchemy import (
    JSON,
    Column,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DatabaseError, DBAPIError, OperationalError

from rsbench.errors import ConfigError, DataError

DB_FILE = "results.db"
T = TypeVar("T")

metadata = MetaData()

cells = Table(
    "cells",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("benchmark", String(200), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("label", Text, nullable=False),
    Column("init_label", Text, nullable=False),
    Column("task", Text),
    Column("config", JSON, nullable=False),
    Column("depends_on", String(40)),
    Column("priority", Integer, nullable=False, default=0),
    Column("out_dir", Text),
    Column("log_path", Text),
    Column("code_version", String(100)),
    Column("status", String(16), nullable=False, default="pending"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("worker", String(300)),
    Column("claimed_at", Float),
    Column("heartbeat_at", Float),
    Column("finished_at", Float),
    Column("duration_s", Float),
    Column("error", Text),
    Column("created_at", Float),
    Index("ix_cells_status", "status"),
)

runs = Table(
    "runs",
    metadata,
    Column("cell_id", String(40), ForeignKey("cells.id"), primary_key=True),
    Column("label", Text, nullable=False),
    Column("run_dir", Text, nullable=False),
    Column("method", String(100)),
    Column("backbone", String(200)),
    Column("steps", Integer),
    Column("wall_time_s", Float),
    Column("device_hours", Float),
    Column("images_per_s", Float),
    Column("device", String(100)),
    Column("code_version", String(100)),
    Column("corpus", Text),
    Column("config", JSON),
    Column("run_json", JSON),
    Column("backbone_json", JSON),
    Column("metrics", JSON),
    Column("corpus_json", JSON),
    Column("recorded_at", Float),
)

results = Table(
    "results",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("source", String(1000), nullable=False),
    Column("cell_id", String(40), ForeignKey("cells.id")),
    Column("task", String(200), nullable=False),
    Column("dataset", String(500), nullable=False),
    Column("protocol", String(100), nullable=False),
    Column("init", String(1000), nullable=False),
    Column("init_kind", String(50)),
    Column("backbone", String(200)),
    Column("label_fraction", Float, nullable=False),
    Column("seed", Integer, nullable=False),
    Column("metric", String(200), nullable=False),
    Column("value", Float, nullable=False),
    Column("created", String(40)),
    Column("row", JSON, nullable=False),
    UniqueConstraint(
        "source", "task", "dataset", "protocol", "init", "label_fraction", "seed", "metric", name="uq_results_row"
    ),
    Index("ix_results_cell", "cell_id"),
)


def db_url(db: str | None, out: str | Path | None) -> str:
    """A SQLAlchemy URL from --db (URL, .db file or folder holding results.db), else OUT/results.db."""
    if db and "://" in db:
        return db
    if db:
        path = Path(db).expanduser()
        path = path / DB_FILE if path.is_dir() else path
    elif out is not None:
        path = Path(out).expanduser() / DB_FILE
    else:
        raise ConfigError("no results store: give --db URL|FILE or the benchmark folder")
    return f"sqlite:///{path.resolve()}"


def existing_db_url(db: str | None, out: str | Path | None) -> str:
    """Like db_url, for reading: a SQLite file that does not exist is an error, not a new empty store."""
    url = db_url(db, out)
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        raise DataError(f"no results store at {url.removeprefix('sqlite:///')} (run `rsbench benchmark run` first)")
    return url


def _sqlite_setup(engine: Engine) -> None:
    # pysqlite's implicit BEGIN is deferred: two readers that both upgrade to writers deadlock and SQLite
    # then fails one at once, without waiting. BEGIN IMMEDIATE takes the write lock up front, so the
    # busy timeout applies and the read-check-update of a claim is atomic across processes.
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout = 60000")
        cur.execute("PRAGMA journal_mode = WAL")  # readers never block the writer, nor it them
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _transient(err: DBAPIError) -> bool:
    text = str(err.orig).lower() if err.orig is not None else str(err).lower()
    code = getattr(err.orig, "pgcode", None) or getattr(err.orig, "sqlstate", None)
    return "locked" in text or "busy" in text or code in ("40001", "40P01")


def store_error(url: str | None, err: DBAPIError) -> Exception:
    """A damaged or unreachable store as a one-line DataError naming it (password hidden); other database
    errors (constraint violations: bugs) are returned unchanged."""
    if not isinstance(err, OperationalError) and type(err) is not DatabaseError:
        return err
    reason = str(err.orig if err.orig is not None else err).strip().splitlines()[0]
    where = display_url(url) if url else "the results store"
    if url and url.startswith("sqlite:///"):
        where = url.removeprefix("sqlite:///")
    return DataError(f"cannot use results store {where}: {reason}")


def retrying(fn: Callable[..., T], attempts: int = 30) -> Callable[..., T]:
    """Re-run a whole transaction when the database is busy or reports a serialization conflict."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs) -> T:
        for i in range(attempts):
            try:
                return fn(*args, **kwargs)
            except (OperationalError, DBAPIError) as e:
                if not _transient(e) or i == attempts - 1:
                    url = getattr(args[0], "url", None) if args else None  # a Store's, or an Engine's URL
                    converted = store_error(None if url is None else str(url), e)
                    if converted is e:
                        raise
                    raise converted from e
                time.sleep(min(2.0, 0.05 * 2**i) * (0.5 + random.random()))
        raise AssertionError("unreachable")

    return wrapper


def display_url(url: str) -> str:
    """`url` as it may be printed, logged or saved: a password is replaced by ***."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy parses: hide anything between ':' and '@' of a netloc
        return re.sub(r"(//[^:/@]*:)[^@/]*@", r"\1***@", url)


@functools.lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 60})
        _sqlite_setup(engine)
    else:
        try:
            engine = create_engine(url, pool_pre_ping=True)
        except Exception as e:  # unknown dialect, missing driver: the user's URL is wrong
            raise ConfigError(
                f"cannot use database URL {display_url(url)!r}: {str(e).replace(url, display_url(url))}"
            ) from None
    retrying(_create_tables)(engine)  # a damaged or unreachable store: retrying's one-line DataError
    return engine


def _create_tables(engine: Engine) -> None:
    try:
        metadata.create_all(engine)
    except DBAPIError as e:
        # Two processes creating the schema at once: the loser sees "already exists"; the next try is a no-op.
        if "already exists" not in str(e).lower():
            raise
        metadata.create_all(engine)
