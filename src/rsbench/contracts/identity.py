"""Identity vs execution: which config keys decide a result and which only decide how it is computed.

A config field that never changes a result (devices, workers, output folder, cluster settings) is marked
where it is declared, `Field(..., json_schema_extra=EXECUTION)`, and every consumer derives the set from
the model: the stage compares the other keys when an output is reused, the benchmark leaves these out of
cell ids. Imports no stage and no torch.
"""

from __future__ import annotations

from pydantic import BaseModel

# Marker for `Field(json_schema_extra=EXECUTION)`: how and where a stage runs, not what it computes.
EXECUTION = {"execution": True}


def execution_keys(model: type[BaseModel]) -> frozenset[str]:
    """Names of the fields of `model` marked with EXECUTION."""
    return frozenset(
        name
        for name, field in model.model_fields.items()
        if isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get("execution") is True
    )
