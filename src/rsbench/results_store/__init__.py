"""The results store the benchmark fills and the report reads: one SQLAlchemy database (SQLite by default).

It holds the benchmark's cells (their queue state), result rows (rsbench.contracts.results) and run
records (rsbench.contracts.run_record). It imports no stage: the benchmark and the report both use it,
and neither reaches into the other.

Modules: db (schema, engine, retries, where the store is), store (`Store`: cell claims, completion,
results import and reading).
"""

from rsbench.results_store.db import DB_FILE, db_url, existing_db_url
from rsbench.results_store.store import (
    DONE,
    FAILED,
    PENDING,
    RUNNING,
    STORED_KEY,
    CellSpec,
    Store,
    feature_group,
    require_rows,
    result_columns,
    worker_alive,
    worker_identity,
)

__all__ = [
    "DB_FILE",
    "DONE",
    "FAILED",
    "PENDING",
    "RUNNING",
    "STORED_KEY",
    "CellSpec",
    "Store",
    "db_url",
    "existing_db_url",
    "feature_group",
    "require_rows",
    "result_columns",
    "worker_alive",
    "worker_identity",
]
