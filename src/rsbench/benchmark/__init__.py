"""`rsbench benchmark`: expand an experiment file into a matrix of cells with content-addressed ids, run
each cell once (local worker processes or SLURM jobs) and keep every result in one SQLAlchemy store.

Modules: experiment (experiment file), matrix (cells and ids), db/store (schema, atomic claims), execute
(one cell through the stages' public entry points), snapshots (intermediate checkpoints), worker /
runner (local executor), slurm (submitit executor), status, export.
"""

from rsbench.benchmark.experiment import Experiment, load_experiment
from rsbench.benchmark.matrix import Cell, code_version, expand
from rsbench.benchmark.plan import Plan, load_plan
from rsbench.benchmark.store import Store

__all__ = ["Cell", "Experiment", "Plan", "Store", "code_version", "expand", "load_experiment", "load_plan"]
