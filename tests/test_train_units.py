"""Building blocks of scalable training: rank-sharded resumable data, seeded views, FLOP counting,
run identity, peak-FLOPs table. Fast, in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from rsbench.contracts.pretrain_config import PretrainConfig
from rsbench.corpus import CorpusBuildConfig, CorpusDataset, build_corpus
from rsbench.train.data import CorpusStream, EpochSampler, seeded_rngs
from rsbench.train.hardware import count_step_flops, peak_flops

SN6 = "spacenet6_rotterdam_ms1_4band.tif"


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory, rasters_dir) -> Path:
    """81 real 32-px tiles of the SpaceNet-6 chip in 7 shards (six of 12 tiles, one of 9)."""
    out = tmp_path_factory.mktemp("train_corpus") / "corpus"
    build_corpus(
        CorpusBuildConfig(inputs=[str(rasters_dir / SN6)], out=str(out), tile_size=32, shard_size=12, workers=1)
    )
    return out


def _epoch(sampler: EpochSampler) -> list[list[int]]:
    items = list(sampler)
    p = sampler.per_device
    return [[i for i, _ in items[k : k + p]] for k in range(0, len(items), p)]


def test_sampler_ranks_see_the_single_process_batches_and_resume_skips_exactly():
    n, global_batch, micro = 50, 8, 6
    single = EpochSampler(n, global_batch, micro, seed=3)
    single.set_epoch(1)
    batches = _epoch(single)
    assert len(batches) == micro and len({i for b in batches for i in b}) == micro * global_batch  # no repeats
    ranks = []
    for r in range(2):
        s = EpochSampler(n, global_batch // 2, micro, seed=3)
        s.set_distributed(r, 2)
        s.set_epoch(1)
        ranks.append(_epoch(s))
    for m in range(micro):  # rank 0 + rank 1 micro-batch m == the single-process batch m, in order
        assert ranks[0][m] + ranks[1][m] == batches[m]
    resumed = EpochSampler(n, global_batch, micro, seed=3)
    resumed.resume_at(1, 4)
    resumed.set_epoch(1)  # Lightning calls this for the resumed epoch too: the offset must survive
    assert _epoch(resumed) == batches[4:] and len(resumed) == micro * global_batch
    resumed.set_epoch(2)
    assert _epoch(resumed) != batches and len(_epoch(resumed)) == micro
    end = EpochSampler(n, global_batch, micro, seed=3)
    end.resume_at(1, micro)  # saved at the last batch of epoch 1: continue with epoch 2
    assert end.epoch == 2 and end.start == 0


def test_seeded_rngs_are_reproducible_and_restore_the_callers_streams():
    torch.manual_seed(0)
    before = torch.get_rng_state()
    with seeded_rngs(1, 2, 3):
        a = torch.rand(4)
    assert torch.equal(torch.get_rng_state(), before)
    with seeded_rngs(1, 2, 3):
        assert torch.equal(torch.rand(4), a)
    with seeded_rngs(1, 2, 4):
        assert not torch.equal(torch.rand(4), a)


def _stream_batches(corpus: Path, workers: int, n: int, skip: tuple[int, int] | None = None):
    views = lambda x: [x.clone()]  # noqa: E731 - identity "augmentation": batches reveal which tiles came
    stream = CorpusStream(CorpusDataset(corpus, shuffle=True, seed=5), views, seed=5, per_device=4, micro_batches=n)
    if skip:
        stream.resume_at(*skip)
    loader = DataLoader(
        stream, batch_size=4, num_workers=workers, collate_fn=lambda b: [torch.stack([v[0] for v in b])]
    )
    out = []
    for batch in loader:
        out.append(batch[0])
        if len(out) == n - (skip[1] if skip else 0):
            break
    return out


@pytest.mark.parametrize("workers", [0, 2])
def test_corpus_stream_resumes_mid_epoch_at_the_same_tile(small_corpus, workers):
    # 30 batches of 4 from 81 tiles: the stream cycles its shards instead of running dry.
    full = _stream_batches(small_corpus, workers, 30)
    assert len(full) == 30
    tail = _stream_batches(small_corpus, workers, 30, skip=(0, 11))
    assert len(tail) == 19
    for a, b in zip(full[11:], tail):
        assert torch.equal(a, b)


def test_flop_count_matches_the_formula_on_meta_and_on_the_cpu_fallback():
    class Linear(nn.Module):
        def __init__(self, data_dependent: bool):
            super().__init__()
            self.fc, self.data_dependent = nn.Linear(64, 32, bias=False), data_dependent

        def training_loss(self, views):
            y = self.fc(views[0])
            return (y[y > 0].sum() if self.data_dependent else y.sum()), y

    # forward 2*B*in*out; backward: the weight's gradient, 2*B*in*out (images need no gradient).
    expected = 4 * 16 * 64 * 32
    flops, note = count_step_flops(lambda: Linear(False), [(16, 64)])
    assert flops == expected and note is None
    flops, note = count_step_flops(lambda: Linear(True), [(16, 64)])  # boolean mask: no meta kernel
    assert flops == expected and "scaled" in note


def test_peak_flops_table():
    assert peak_flops("NVIDIA H100 80GB HBM3", "bf16-mixed") == pytest.approx(989.4e12)
    assert peak_flops("NVIDIA H100 PCIe", "bf16-mixed") == pytest.approx(756.5e12)
    assert peak_flops("NVIDIA A100-SXM4-80GB", "16-mixed") == pytest.approx(312e12)
    assert peak_flops("Tesla V100-SXM2-32GB", "32-true") == pytest.approx(15.7e12)
    assert peak_flops("Tesla V100-SXM2-32GB", "bf16-mixed") is None
    assert peak_flops("cpu (2 threads)", "32-true") is None


def test_run_identity_ignores_execution_settings_and_batch_must_split(tmp_path):
    a = PretrainConfig(images=tmp_path, out=tmp_path / "r", batch_size=64)
    b = a.model_copy(update={"devices": 4, "num_workers": 8, "precision": "bf16-mixed", "out": tmp_path / "moved"})
    assert a.identity() == b.identity()
    assert a.identity() != a.model_copy(update={"accumulate": 2}).identity()
    assert (
        PretrainConfig(images=tmp_path, out=tmp_path, batch_size=64, devices=2, nodes=2, accumulate=2).per_device_batch
        == 8
    )
    with pytest.raises(ValueError, match="not a multiple of devices x nodes x accumulate"):
        PretrainConfig(images=tmp_path, out=tmp_path, batch_size=64, devices=3)
    json.dumps(a.identity())  # identity is plain data (compared against config.yaml)


def test_missing_logger_package_is_a_clear_error_before_any_work(tmp_path, eurosat_small):
    import importlib.util

    from rsbench.errors import ConfigError
    from rsbench.train import pretrain

    if importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX"):
        pytest.skip("tensorboard is installed here")
    with pytest.raises(ConfigError, match="--logger tensorboard needs the 'tensorboard' package"):
        pretrain(PretrainConfig(images=eurosat_small, out=tmp_path / "r", logger="tensorboard", max_steps=1))
    assert not (tmp_path / "r").exists()


def test_runs_lists_status_progress_and_cost(tmp_path):
    import subprocess
    import sys
    from datetime import datetime, timedelta, timezone

    from typer.testing import CliRunner

    from rsbench.cli import app

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    now = datetime.now(timezone.utc)
    runs = {
        "a/done": {
            "status": "finished",
            "step": 100,
            "max_steps": 100,
            "images_per_s": 512.5,
            "gpu_hours": 1.25,
            "device_hours": 1.25,
            "loss": 0.5,
            "updated_at": now.isoformat(),
        },
        "a/dead": {
            "status": "running",
            "step": 10,
            "max_steps": 100,
            "updated_at": now.isoformat(),
            "segments": [{"host": __import__("socket").gethostname(), "pid": dead.pid}],
        },
        "b/old": {
            "status": "running",
            "step": 50,
            "max_steps": 200,
            "segments": [{"host": "elsewhere", "pid": 1}],
            "updated_at": (now - timedelta(hours=2)).isoformat(),
        },
        "b/pre": {"status": "preempted", "step": 30, "max_steps": 120, "updated_at": now.isoformat()},
    }
    for name, run in runs.items():
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "run.json").write_text(json.dumps({"method": "mocov2", "backbone": "resnet50", **run}))
    (tmp_path / "b" / "pre" / "metrics.csv").write_text("step,train/loss\n28,1.5\n29,1.25\n")
    result = CliRunner().invoke(app, ["runs", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    rows = {Path(r["run"]).relative_to(tmp_path).as_posix(): r for r in map(json.loads, result.stdout.splitlines())}
    assert rows["a/done"]["status"] == "finished" and rows["a/done"]["device_hours"] == 1.25
    assert rows["a/dead"]["status"] == "killed"  # its process is gone
    assert rows["b/old"]["status"].startswith("stalled")  # no news for 2 hours
    assert (
        rows["b/pre"]["status"] == "preempted" and rows["b/pre"]["loss"] == 1.25 and rows["b/pre"]["progress"] == 0.25
    )
    table = CliRunner().invoke(app, ["runs", str(tmp_path / "a")])
    assert table.exit_code == 0 and "100/100 (100%)" in table.stdout and "512.5" in table.stdout
    missing = CliRunner().invoke(app, ["runs", str(tmp_path / "nope")])
    assert missing.exit_code == 1 and "no such folder" in missing.stderr


def test_vit_backbones_use_scaled_dot_product_attention():
    from rsbench.models import create_backbone

    vit = create_backbone("vit_tiny_patch16_224", 3, 32)
    assert all(block.attn.fused_attn for block in vit.blocks)  # timm then calls F.scaled_dot_product_attention


def test_view_options_reach_the_training_transform(tmp_path, eurosat_small):
    """--color-jitter adds the RGB colour jitter; --patch-size sizes DINO's local crops for that patch."""
    from rsbench.ssl import get_method
    from rsbench.ssl.augment import RGBColorJitter
    from rsbench.train.setup import training_source

    def steps(source) -> list[type]:
        return [type(m) for m in source.transform.transforms[0].transforms]

    simclr = get_method("simclr")
    plain = training_source(PretrainConfig(images=eurosat_small, out=tmp_path / "a"), simclr)
    jitter = training_source(PretrainConfig(images=eurosat_small, out=tmp_path / "b", color_jitter=True), simclr)
    assert RGBColorJitter in steps(jitter) and RGBColorJitter not in steps(plain)

    dino = get_method("dino")
    cfg = dict(images=eurosat_small, backbone="vit_tiny_patch16_224", image_size=128)
    p16 = training_source(PretrainConfig(out=tmp_path / "c", **cfg), dino)
    p8 = training_source(PretrainConfig(out=tmp_path / "d", patch_size=8, **cfg), dino)
    # Local crops are 96/224 of the global side (54.9 px), rounded up to a multiple of the patch.
    assert p16.view_shapes[2][-1] == 64 and p8.view_shapes[2][-1] == 56
    assert len(p16.view_shapes) == 10  # 2 global + the paper's 8 local crops
    # The recipe's n_local reaches the view transform; 0 is the paper's 2-global-crop ablation.
    two_local = training_source(PretrainConfig(out=tmp_path / "e", recipe={"n_local": 2}, **cfg), dino)
    no_local = training_source(PretrainConfig(out=tmp_path / "f", recipe={"n_local": 0}, **cfg), dino)
    assert len(two_local.view_shapes) == 4 and len(no_local.view_shapes) == 2


def test_dino_exports_its_teacher_and_snapshots_follow(tmp_path):
    """backbone.pt is the network the paper evaluates: DINO's EMA teacher, the online encoder elsewhere;
    intermediate-checkpoint snapshots take the same module out of the Lightning checkpoint."""
    from rsbench.benchmark.snapshots import export_snapshots
    from rsbench.ssl import get_method
    from rsbench.train.export import export_backbone

    norm = {"mean": [0.0] * 3, "std": [1.0] * 3}
    exported = {}
    for name in ("dino", "byol"):
        model = get_method(name)(
            arch="resnet18",
            in_chans=3,
            image_size=32,
            batch_size=8,
            max_steps=10,
            recipe={"out_dim": 64, "hidden_dim": 32, "bottleneck_dim": 16}
            if name == "dino"
            else {"hidden_dim": 32, "proj_dim": 16},
        )
        with torch.no_grad():  # student and teacher differ, as after any training step
            for p in model.backbone.parameters():
                p.add_(1.0)
        cfg = PretrainConfig(method=name, images=tmp_path, out=tmp_path / name, image_size=32, batch_size=8)
        cfg.out.mkdir()
        export_backbone(model, cfg, "resnet18", norm, {"kind": "images"}, steps=10, n_samples=80)
        state = torch.load(cfg.out / "backbone.pt", weights_only=True)
        expected = model.teacher_backbone if name == "dino" else model.backbone
        assert torch.equal(state["conv1.weight"], expected.conv1.weight)
        exported[name] = json.loads((cfg.out / "backbone.json").read_text())["exported_module"]
        # A checkpoint of step 4 becomes a snapshot holding the same module.
        (cfg.out / "checkpoints").mkdir()
        torch.save(
            {"global_step": 4, "epoch": 0, "state_dict": model.state_dict()}, cfg.out / "checkpoints" / "s4.ckpt"
        )
        snap = export_snapshots(cfg.out, [4])[4]
        assert torch.equal(torch.load(snap / "backbone.pt", weights_only=True)["conv1.weight"], expected.conv1.weight)
    assert exported == {"dino": "teacher_backbone", "byol": "backbone"}
