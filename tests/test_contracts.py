"""The stage contracts (rsbench.contracts) and the shared results store: cheap to import, one format."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from rsbench.contracts.backbone_export import BACKBONE_META, BACKBONE_WEIGHTS, BackboneExport, module_state_dict
from rsbench.contracts.corpus_info import CorpusInfo
from rsbench.contracts.results import ROW_KEY, load_results, make_row
from rsbench.contracts.run_dir import RunDir, snapshot_name, upgrade_run
from rsbench.contracts.run_record import collect_run
from rsbench.errors import DataError


def test_contracts_and_results_store_import_no_stage_stack():
    code = (
        "import importlib, json, pkgutil, sys, rsbench.contracts\n"
        "names = [m.name for m in pkgutil.iter_modules(rsbench.contracts.__path__)]\n"
        "for n in names: importlib.import_module('rsbench.contracts.' + n)\n"
        "import rsbench.results_store\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'lightning', 'lightly', 'timm'})\n"
        "stages = sorted(m for m in sys.modules if m.split('.')[:2] in [['rsbench', s] for s in\n"
        "    ('benchmark', 'report', 'train', 'ssl', 'evaluate', 'corpus', 'models', 'cli')])\n"
        "print(json.dumps({'names': names, 'heavy': heavy, 'stages': stages}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    got = json.loads(out.stdout)
    assert {"run_dir", "backbone_export", "corpus_info", "run_record", "results"} <= set(got["names"])
    assert got["heavy"] == [] and got["stages"] == []


def test_backbone_export_round_trip_and_plain_timm(tmp_path):
    import timm

    from rsbench.models import load_exported_backbone

    model = timm.create_model("resnet18", in_chans=4, num_classes=0)
    meta = {"arch": "resnet18", "in_chans": 4, "image_size": 32, "timm_kwargs": {}, "feature_dim": 512}
    export = BackboneExport(tmp_path / "run")
    assert not export.exists()
    export.write(model.state_dict(), meta)
    assert export.exists() and export.is_complete()
    assert (tmp_path / "run" / BACKBONE_WEIGHTS).is_file() and (tmp_path / "run" / BACKBONE_META).is_file()
    assert export.read_meta() == meta
    state = export.read_state_dict()
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    # What the format promises: plain timm loads it, strictly.
    plain = timm.create_model(meta["arch"], **BackboneExport.timm_kwargs(meta))
    plain.load_state_dict(torch.load(export.weights, weights_only=True), strict=True)
    loaded, got_meta = load_exported_backbone(tmp_path / "run")
    assert got_meta == meta and torch.equal(loaded.conv1.weight, model.conv1.weight)
    assert loaded.conv1.weight.shape[1] == 4


def test_backbone_export_requires_both_files(tmp_path):
    export = BackboneExport(tmp_path)
    with pytest.raises(DataError, match="missing backbone.json or backbone.pt"):
        export.require()


def test_module_state_dict_from_a_lightning_checkpoint_state_dict():
    class Method(torch.nn.Module):  # what a LightningModule's state_dict looks like: one prefix per submodule
        def __init__(self):
            super().__init__()
            self.backbone = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3), torch.nn.BatchNorm2d(8))
            self.teacher_backbone = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3), torch.nn.BatchNorm2d(8))
            self.head = torch.nn.Linear(8, 2)

    method = Method()
    ckpt_state = method.state_dict()
    for name in ("backbone", "teacher_backbone"):
        got = module_state_dict(ckpt_state, name)
        want = getattr(method, name).state_dict()
        assert got.keys() == want.keys()
        assert all(torch.equal(got[k], v) for k, v in want.items())
    assert module_state_dict(ckpt_state).keys() == method.backbone.state_dict().keys()


def test_run_dir_names_and_old_run_json(tmp_path):
    run = RunDir(tmp_path / "r")
    assert run.last_ckpt == tmp_path / "r" / "checkpoints" / "last.ckpt"
    assert run.snapshot(50) == tmp_path / "r" / "snapshots" / "r@step-000050"
    assert snapshot_name("r", 50) == "r@step-000050"
    run.path.mkdir()
    # run.json written before device-hours: only gpu_hours.
    run.run_json.write_text(json.dumps({"status": "finished", "gpu_hours": 1.5, "steps": 10}))
    assert run.read_run()["device_hours"] == 1.5
    assert upgrade_run({"device_hours": 2.0}) == {"device_hours": 2.0}
    assert RunDir.find([tmp_path]) == [run.path]
    assert not run.is_finished()
    # The run record reads through the same upgrade.
    BackboneExport(run.path).write({}, {"arch": "resnet18", "method": "simclr", "data": {"kind": "images"}})
    record = collect_run(run.path, "simclr")
    assert record["device_hours"] == 1.5 and record["steps"] == 10 and record["corpus_json"] is None
    assert record["metrics"] == {} and record["config"] is None


def test_corpus_info_reads_corpus_json(tmp_path):
    corpus = CorpusInfo(tmp_path)
    with pytest.raises(DataError, match="not an rsbench corpus"):
        corpus.read()
    corpus.corpus_json.write_text(json.dumps({"band_groups": {}, "shards": [], "settings": {}}))
    assert corpus.read()["shards"] == [] and corpus.manifest == tmp_path / "manifest.parquet"


def test_results_store_key_is_the_row_key_without_shape(tmp_path):
    from rsbench.results_store import STORED_KEY, Store, db_url

    assert STORED_KEY == tuple(k for k in ROW_KEY if k not in ("image_size", "patch_size"))
    # An imported file with one init at two input shapes keeps both rows (the shape goes into the name).
    rows = [
        make_row(
            task="classification",
            dataset="d",
            protocol="knn",
            init="simclr",
            label_fraction=1.0,
            seed=0,
            metric="accuracy",
            value=v,
            image_size=size,
        )
        for v, size in ((0.5, 32), (0.6, 64))
    ]
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert len(load_results([path])) == 2
    store = Store(db_url(str(tmp_path / "r.db"), None))
    assert store.import_results(path) == 2
    assert sorted(r["init"] for r in store.result_rows()) == ["simclr (32 px)", "simclr (64 px)"]


def _imported_modules(package: str) -> dict[str, set[str]]:
    """{source file: rsbench modules it imports (top-level or inside functions)} for one package."""
    import ast
    from pathlib import Path

    import rsbench

    root = Path(rsbench.__file__).parent / package.removeprefix("rsbench.").replace(".", "/")
    found = {}
    for path in sorted(root.rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        found[str(path)] = {n for n in names if n.startswith("rsbench")}
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"), [("rsbench.report", "rsbench.benchmark"), ("rsbench.benchmark", "rsbench.report")]
)
def test_benchmark_and_report_meet_only_in_contracts_and_the_store(package, forbidden):
    """Stages meet on disk, in rsbench.contracts and in rsbench.results_store: never in each other's modules."""
    imports = _imported_modules(package)
    # The scan sees imports (both packages use the shared contracts), so an empty result below means something.
    assert any(n.startswith("rsbench.contracts") for names in imports.values() for n in names), package
    offending = {
        f: sorted(n for n in names if n == forbidden or n.startswith(forbidden + ".")) for f, names in imports.items()
    }
    assert {f: n for f, n in offending.items() if n} == {}
