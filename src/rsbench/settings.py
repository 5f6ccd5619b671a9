"""Configuration: one pydantic model per command, fed by a YAML file and/or CLI options.

Precedence: CLI option > `--config FILE.yaml` > model default. Unknown keys and wrong types are
rejected before any work starts, with the offending key named. The resolved config is saved beside
the command's outputs so every artefact records how it was made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from rsbench.errors import ConfigError
from rsbench.io import write_yaml

M = TypeVar("M", bound="StrictModel")


class StrictModel(BaseModel):
    """Base for all configs: unknown keys are errors, values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


def _format_validation_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "<root>"
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    else:
        msg = first["msg"]
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"invalid config key '{key}' in {source}: {msg}{more}"


def load_yaml_mapping(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, not {type(data).__name__}")
    return data


def resolve_config(model: type[M], config_file: str | Path | None, **cli: Any) -> M:
    """Merge a YAML file with CLI options (None means 'not given') and validate."""
    values: dict[str, Any] = load_yaml_mapping(config_file) if config_file else {}
    values.update({k: v for k, v in cli.items() if v is not None})
    source = f"config file {config_file} / command line" if config_file else "command line"
    try:
        return model.model_validate(values)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, source)) from None


def save_config(cfg: BaseModel, path: str | Path) -> Path:
    return write_yaml(path, cfg.model_dump(mode="json"))
