"""`rsbench benchmark`: expand an experiment file into a matrix of cells with content-addressed ids, run
each cell once (local worker processes or SLURM jobs) and keep every result in the results store
(rsbench.results_store, shared with the report).

Modules: experiment (experiment file), matrix (cells and ids), execute
(one cell through the stages' public entry points), snapshots (intermediate checkpoints), worker /
runner (local executor), slurm (submitit executor), status, export.
"""

from rsbench.benchmark.experiment import Experiment, load_experiment
from rsbench.benchmark.matrix import Cell, code_version, expand
from rsbench.benchmark.plan import Plan, load_plan
from rsbench.results_store.store import Store

__all__ = ["Cell", "Experiment", "Plan", "Store", "code_version", "expand", "load_experiment", "load_plan"]
