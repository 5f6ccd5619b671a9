"""`rsbench methods [--method NAME]`: the SSL methods, their default backbones and paper recipes.

Reads rsbench.ssl.catalog only: no torch, Lightning or lightly is imported."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import typer
from rich.table import Table

from rsbench.cli.common import ConfigOption, handle_errors, stdout_console
from rsbench.settings import StrictModel, resolve_config
from rsbench.ssl.catalog import CATALOG, MethodCard, get_card

# Method-specific recipe keys shown in the overview (temperatures, EMA momenta, queue, masking).
_HIGHLIGHTS = (
    "temperature",
    "student_temp",
    "teacher_temp",
    "queue_size",
    "momentum_start",
    "momentum_end",
    "mask_ratio",
    "lambda_param",
    "mu_param",
    "nu_param",
)


class MethodsConfig(StrictModel):
    method: str | None = None


def _lr_rule(d: dict) -> str:
    return {"linear": f"{d['lr']:g} x B/256", "sqrt": f"{d['lr']:g} x sqrt(B/256)", "none": f"{d['lr']:g}"}[
        d["lr_scaling"]
    ]


def _highlights(extra: dict) -> str:
    shown = {k: v for k, v in extra.items() if k in _HIGHLIGHTS}
    if "momentum_start" in shown:
        start, end = shown.pop("momentum_start"), shown.pop("momentum_end")
        shown["ema"] = f"{start:g}" if start == end else f"{start:g}->{end:g} (cosine)"
    if "teacher_temp" in shown and "warmup_teacher_temp" in extra:
        shown["teacher_temp"] = f"{extra['warmup_teacher_temp']:g}->{shown['teacher_temp']:g}"
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items())


def overview_table(cards: dict[str, MethodCard]) -> Table:
    table = Table(
        title="SSL methods and their paper recipes",
    )
    for col in (
        "method",
        "default backbone",
        "optimizer",
        "LR (batch rule)",
        "weight decay",
        "paper epochs/batch",
        "temperature / momentum",
        "paper",
    ):
        table.add_column(col, overflow="fold")
    for card in cards.values():
        d = card.describe()
        table.add_row(
            d["name"],
            d["backbone"],
            d["optimizer"],
            _lr_rule(d),
            f"{d['weight_decay']:g}",
            f"{d['paper_epochs']} / {d['paper_batch_size']}",
            _highlights(d["extra"]),
            d["paper"],
        )
    return table


def recipe_table(card: MethodCard) -> Table:
    """Every recipe key of `card` under each named preset (`rsbench pretrain --recipe PRESET`)."""
    table = Table(
        title=f"{card.name} recipe presets (rsbench pretrain --recipe PRESET)",
        caption=f"default backbone {card.default_backbone}; {card.paper}",
    )
    table.add_column("recipe key")
    recipes = {preset: asdict(recipe) for preset, recipe in card.presets().items()}
    for preset in recipes:
        table.add_column(preset)
    paper = next(iter(recipes.values()))
    keys = [k for k in paper if k != "extra"] + list(paper["extra"])
    for key in keys:
        values = [r[key] if key in r else r["extra"][key] for r in recipes.values()]
        note = " (fitted to the data)" if key in card.sample_store_keys else ""
        table.add_row(key + note, *(repr(v) if isinstance(v, str) else str(v) for v in values))
    return table


@handle_errors
def methods_command(
    method: str | None = typer.Option(None, "--method", help="Show every recipe key of one method."),
    config: Path | None = ConfigOption,
) -> None:
    """List the SSL methods with their default backbone and paper recipe (or one method's recipe keys)."""
    cfg = resolve_config(MethodsConfig, config, method=method)
    console = stdout_console()
    if cfg.method:
        console.print(recipe_table(get_card(cfg.method)))
        return
    console.print(overview_table(CATALOG))
    console.print(
        "Presets: `rsbench pretrain --recipe small-batch` trains with AdamW for small batches; "
        "`rsbench methods --method M` shows both presets of M; `recipe:` in a pretrain config overrides single keys."
    )
