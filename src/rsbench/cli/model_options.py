"""Typer options generated from a pydantic config model: each option is declared once, in the model.

    @app.command("build")
    @handle_errors
    @model_options(CorpusBuildConfig, exclude={"inputs"}, options={"seed": Opt(panel=SAMPLING)})
    def build_command(inputs: list[str] = typer.Argument(None), given: dict = GIVEN, config: Path = ConfigOption):
        cfg = resolve_config(CorpusBuildConfig, config, **given)

`model_options` replaces the command's `given` parameter (any name, see `into`) by one option per model
field, in field order, and hands the command only the options given on the command line, as
`{field: value}`: an option not given leaves the `--config` file's value or the model default in force
(precedence CLI > config file > model default, `rsbench.settings.resolve_config`). Typer reads the
wrapper's `__signature__` and `__annotations__` (`typer.utils.get_params_from_function`), so the
generated options behave like hand-written ones; decorators stack (each replaces its own placeholder).

Per field: option `--field-name` (plus `Opt.aliases`, or `Opt.decls` instead); help = the Field's
description, a Literal's choices and the model default, e.g. "Crop size fed to the network. [default: 64]";
bool fields are `--x/--no-x` flags; list fields a comma-separated string (split like `split_csv`) or, with
`Opt(repeat=True)`, a repeatable option; every option defaults to None ("not given"). Fields that are not
flags (nested models, mappings, positional arguments) must be listed in `exclude`: an unsupported field
type that is not excluded is an error when the command is defined, so no field is silently left out.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from rich.markup import escape

from rsbench.cli.common import split_csv

# The placeholder of the generated options in a command's signature: `given: dict = GIVEN`.
GIVEN: dict[str, Any] = {}


@dataclass(frozen=True)
class Opt:
    """How one field appears on the command line (the per-command table; everything else is generated)."""

    aliases: tuple[str, ...] = ()  # more names for the option, e.g. ("-o",) or ("--slurm-queue",)
    decls: tuple[str, ...] = ()  # replaces the generated name, e.g. ("--input-list",) for `input_lists`
    panel: str | None = None  # rich_help_panel (default: the decorator's `panel`)
    repeat: bool = False  # list field: a repeatable option instead of a comma-separated string
    show_default: bool = True  # False where the default depends on other keys (the description says how)
    metavar: str | None = None
    type: Any = None  # the command-line type when it differs from the field's, e.g. str for `time` ('HH:MM:SS')


# The SlurmResources fields whose command-line form is not the generated one (pretrain, corpus build).
SLURM_RESOURCE_OPTIONS: dict[str, Opt] = {"time": Opt(type=str), "setup": Opt(repeat=True)}


@dataclass(frozen=True)
class GeneratedOptions:
    """What one `model_options` decorator generated (read by the tests and by `options_of`)."""

    model: type[BaseModel]
    into: str
    params: dict[str, str]  # field name -> parameter name
    excluded: frozenset[str]


def _unwrap_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
        return typing.Union[tuple(args)]  # noqa: UP007 (built from a runtime tuple)
    return annotation


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _cli_type(name: str, annotation: Any, opt: Opt) -> tuple[Any, str]:
    """(Typer annotation, kind) for a field; kind is scalar | bool | csv | repeat | literal."""
    if opt.type is not None:
        return opt.type | None, "scalar"
    ann = _unwrap_optional(annotation)
    origin = typing.get_origin(ann)
    if ann is bool:
        return bool | None, "bool"
    if ann in (int, float, str, Path):
        return ann | None, "scalar"
    if origin is Literal:
        return str | None, "literal"
    if origin in (list, tuple, set, frozenset):
        (item, *_) = typing.get_args(ann) or (str,)
        item = _unwrap_optional(item)
        if opt.repeat:
            return list[item if item in (int, float, str, Path) else str] | None, "repeat"
        return str | None, "csv"
    if origin in (typing.Union, types.UnionType) and not any(_is_model(a) for a in typing.get_args(ann)):
        return str | None, "scalar"
    raise TypeError(
        f"field '{name}' ({annotation}) has no command-line form: list it in `exclude` or give it a simpler type"
    )


def default_text(field: FieldInfo, kind: str) -> str | None:
    """The model default as shown in help, or None when there is none to show (required, None, empty)."""
    if field.default_factory is not None:
        default = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return None
    else:
        default = field.default
    if default is None or (isinstance(default, (list, tuple, dict, set)) and not default):
        return None
    if kind == "bool" or isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, (list, tuple)):
        return ",".join(str(v) for v in default)
    return str(default)


def option_help(field: FieldInfo, kind: str, show_default: bool = True) -> str:
    """Plain help text: description, then a Literal's choices, then the model default."""
    text = (field.description or "").strip()
    if kind == "literal":
        choices = typing.get_args(_unwrap_optional(field.annotation))
        text += f" One of: {', '.join(str(c) for c in choices)}."
    if kind == "csv":
        text += " Comma-separated."
    if kind == "repeat":
        text += " Repeatable."
    default = default_text(field, kind) if show_default else None
    if default is not None:
        text += f" [default: {default}]"
    return text.strip()


def _convert(kind: str) -> Callable[[Any], Any]:
    if kind == "csv":
        return split_csv
    if kind == "repeat":
        return lambda v: list(v) if v else None
    return lambda v: v


def model_options(
    model: type[BaseModel],
    *,
    into: str = "given",
    exclude: Iterable[str] = (),
    options: Mapping[str, Opt] | None = None,
    panel: str | None = None,
    prefix: str = "",
) -> Callable[[Callable], Callable]:
    """Replace the command's `into` parameter by one Typer option per field of `model` (see the module doc).

    `prefix` names the options of a nested model: prefix "slurm_" gives `--slurm-partition` for `partition`
    (the command still receives `{"partition": ...}`)."""
    exclude = frozenset(exclude)
    options = dict(options or {})
    unknown = (set(options) | exclude) - set(model.model_fields)
    if unknown:
        raise TypeError(f"{model.__name__} has no field(s) {sorted(unknown)}")

    def decorate(fn: Callable) -> Callable:
        sig = inspect.signature(fn, eval_str=True)
        if into not in sig.parameters:
            raise TypeError(f"{fn.__name__} has no parameter '{into}' for the options of {model.__name__}")
        generated: list[inspect.Parameter] = []
        converters: dict[str, tuple[str, Callable[[Any], Any]]] = {}  # parameter -> (field, converter)
        for name, field in model.model_fields.items():
            if name in exclude:
                continue
            opt = options.get(name, Opt())
            cli_type, kind = _cli_type(name, field.annotation, opt)
            param = f"{prefix}{name}"
            flag = "--" + param.replace("_", "-")
            decls = opt.decls or (flag,)
            if kind == "bool":
                decls = tuple(f"{d}/--no-{d[2:]}" if d.startswith("--") and "/" not in d else d for d in decls)
            info = typer.Option(
                None,
                *decls,
                *opt.aliases,
                help=escape(option_help(field, kind, opt.show_default)),
                rich_help_panel=opt.panel or panel,
                show_default=False,
                metavar=opt.metavar,
            )
            generated.append(
                inspect.Parameter(param, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=cli_type)
            )
            converters[param] = (name, _convert(kind))
        clash = set(converters) & (set(sig.parameters) - {into})
        if clash:
            raise TypeError(f"{fn.__name__}: parameters {sorted(clash)} clash with options of {model.__name__}")
        params: list[inspect.Parameter] = []
        for p in sig.parameters.values():
            if p.name == into:
                params.extend(generated)
            else:
                params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY))

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            given: dict[str, Any] = {}
            for param, (name, convert) in converters.items():
                value = convert(kwargs.pop(param, None))
                if value is not None:
                    given[name] = value
            return fn(*args, **kwargs, **{into: given})

        wrapper.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in params if p.annotation is not inspect.Parameter.empty}
        record = GeneratedOptions(model, into, {f: p for p, (f, _) in converters.items()}, exclude)
        wrapper.__model_options__ = (*getattr(fn, "__model_options__", ()), record)  # type: ignore[attr-defined]
        return wrapper

    return decorate


def options_of(command: Callable) -> tuple[GeneratedOptions, ...]:
    """The generated option sets of a command function (through `handle_errors` and other wrappers)."""
    return getattr(command, "__model_options__", ())


def with_section(config: str | Path | None, key: str, given: dict[str, Any]) -> dict[str, Any]:
    """A nested section (e.g. `slurm:`) of the config file with the keys given on the command line over it.

    `resolve_config` merges top-level keys only; a section's options given on the command line must not
    drop the keys the file sets in the same section."""
    from rsbench.settings import load_yaml_mapping

    from_file = load_yaml_mapping(config).get(key) if config else None
    return {**(from_file if isinstance(from_file, dict) else {}), **given}
