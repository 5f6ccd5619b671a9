"""`rsbench evaluate` into a folder that already holds rows for the task: same input shape, or refused."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from rsbench.errors import ConfigError
from rsbench.evaluate import EvaluateConfig, evaluate
from rsbench.evaluate.comparability import differences
from rsbench.io import read_jsonl


def _cfg(data, out, **kw):
    base = {"data": data, "out": out, "init": "random", "seeds": [0], "protocol": ["knn"], "batch_size": 64}
    return EvaluateConfig(**{**base, **kw})


def test_another_image_size_is_refused_unless_allowed(eurosat_small, tmp_path, capsys):
    out = tmp_path / "results"
    quiet = Console(file=io.StringIO())
    evaluate(_cfg(eurosat_small, out, image_size=32), quiet)
    before = (out / "results.jsonl").read_bytes()
    with pytest.raises(ConfigError) as err:
        evaluate(_cfg(eurosat_small, out, image_size=40), quiet)
    message = str(err.value)
    assert "already holds classification rows on eurosat_small" in message
    assert "random-resnet18 was scored at 32 px, random-resnet18 would be at 40 px (pass --image-size 32)" in message
    assert "--allow-mixed" in message and "\n" not in message
    assert (out / "results.jsonl").read_bytes() == before  # nothing written

    capsys.readouterr()
    rows = evaluate(_cfg(eurosat_small, out, image_size=40, allow_mixed=True), quiet)
    warned = " ".join(capsys.readouterr().err.split())
    assert "warning:" in warned and "kept with --allow-mixed" in warned
    assert all("32 px" in r["mixed_inputs"] and "--allow-mixed" in r["mixed_inputs"] for r in rows)
    saved = read_jsonl(out / "results.jsonl")
    assert {r["image_size"] for r in saved} == {32, 40} and len(saved) == 2 * len(rows)


def test_token_count_and_band_set_differences():
    old = [{"init": "mae", "image_size": 64, "patch_size": 8, "normalization": {"mean": [0, 0, 0]}}]
    new = {"init": "random", "image_size": 64, "patch_size": 16, "normalization": {"mean": [0, 0, 0, 0]}}
    found = differences(old, new, ("image size", "token count", "band set"))
    assert found == [
        "mae was scored at 64 tokens, random would be at 16 tokens (pass --image-size/--patch-size giving 64 tokens)",
        "mae was scored at bands 3 band(s), random would be at bands 4 band(s) (pass data with bands 3 band(s))",
    ]
    assert differences(old, {**old[0], "init": "x"}, ("image size", "token count", "band set")) == []
