"""`rsbench report`: aggregate evaluate results over seeds into a self-contained HTML leaderboard page."""

from rsbench.report.aggregate import (
    REQUIRED_KEYS,
    Entry,
    MetricSummary,
    Section,
    build_sections,
    deduplicate,
    find_results_files,
    is_baseline,
    load_results,
    primary_metric,
    summarize,
)
from rsbench.report.render import render_html, render_report

__all__ = [
    "REQUIRED_KEYS",
    "Entry",
    "MetricSummary",
    "Section",
    "build_sections",
    "deduplicate",
    "find_results_files",
    "is_baseline",
    "load_results",
    "primary_metric",
    "render_html",
    "render_report",
    "summarize",
]
