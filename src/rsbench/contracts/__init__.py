"""Contracts between the pipeline stages: what one stage writes to disk and another reads.

This package imports no stage and no torch, so a command that only reads artefacts (the report, the
benchmark planner) can use it cheaply, and a stage's internals never become another stage's API.
"""

from rsbench.contracts.results import (
    HEADLINE_METRICS,
    RESULT_FIELDS,
    RESULTS_FILE,
    ROW_KEY,
    SCHEMA_VERSION,
    ResultRow,
    headline_metric,
    make_row,
    row_key,
    upgrade_row,
)

__all__ = [
    "HEADLINE_METRICS",
    "RESULT_FIELDS",
    "RESULTS_FILE",
    "ROW_KEY",
    "SCHEMA_VERSION",
    "ResultRow",
    "headline_metric",
    "make_row",
    "row_key",
    "upgrade_row",
]
