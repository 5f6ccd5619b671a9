"""Contracts between the pipeline stages: what one stage writes to disk and another reads.

The stages (corpus -> pretrain -> evaluate -> benchmark -> report) meet only through artefacts on disk
and this package:

  results        the evaluation result row (`ResultRow`, `ROW_KEY`, schema versions) and reading
                 results.jsonl files (`validate_row`, `load_results`, `deduplicate`)
  predictions    the per-example test outputs beside results.jsonl
  identity       identity vs execution markers: which config keys decide a result
  run_dir        `RunDir`: every file name of a pretraining run directory and how to read it (run.json,
                 checkpoints/, metrics.csv, snapshots/<run>@step-<N>, ...)
  backbone_export
                 `BackboneExport`: the exported backbone (backbone.pt + backbone.json) and taking the
                 exported module out of a Lightning checkpoint
  corpus_info    `CorpusInfo`: the file names of a built corpus and reading its corpus.json
  run_record     the record of a finished pretraining run that the benchmark stores and the report draws
  pretrain_config, evaluate_config
                 `PretrainConfig`, `EvaluateConfig`: the stages' configurations, which the benchmark
                 planner writes
  corpus_build   `CorpusBuildConfig`: the corpus stage's configuration
  task_spec      task spec files (one downstream task each)
  slurm          `SlurmResources`: what a SLURM job asks for
  architectures  what an architecture name says (is it a ViT, its patch size)

This package imports no stage and no torch (a function that serializes tensors imports torch inside), so
a command that only reads artefacts (the report, the benchmark planner) can use it cheaply, and a
stage's internals never become another stage's API.
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
