"""`rsbench evaluate` protocols: label fractions, multi-label probes and metrics, fine-tuning, the trivial
baselines, on real EuroSAT files (hand-computed references for the metric and feature code)."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from rich.console import Console

from rsbench.data.images import index_image_folder
from rsbench.evaluate import EvaluateConfig, evaluate
from rsbench.evaluate.finetune import param_groups
from rsbench.evaluate.multilabel import knn_multilabel_scores, multilabel_metrics
from rsbench.evaluate.splits import fraction_subset, stratified_split
from rsbench.evaluate.training import TrainingModule


def quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def cfg(data, out, **kw) -> EvaluateConfig:
    base = {"data": data, "out": out, "init": "random", "image_size": 64, "seeds": [0], "protocol": ["knn"]}
    return EvaluateConfig(**{**base, **kw})


# ---------------------------------------------------------------- label fractions


def test_fractions_are_stratified_nested_and_reproducible(eurosat_dir):
    labels = index_image_folder(eurosat_dir).labels  # 230 per class
    train, _ = stratified_split(labels, 0.2, seed=0)
    ytr = labels[train]  # 184 per class
    subsets = {f: fraction_subset(ytr, f, seed=0) for f in (0.001, 0.01, 0.1, 1.0)}
    for f, sub in subsets.items():
        counts = np.bincount(ytr[sub], minlength=10)
        assert counts.tolist() == [max(1, round(f * 184))] * 10, f  # 1 (floor of one per class), 2, 18, 184
    assert set(subsets[0.01]) <= set(subsets[0.1]) <= set(subsets[1.0])
    assert np.array_equal(subsets[0.1], fraction_subset(ytr, 0.1, seed=0))
    assert not np.array_equal(subsets[0.1], fraction_subset(ytr, 0.1, seed=1))

    # Multi-label: ~fraction of the samples, yet every label that has positives keeps one.
    g = np.random.default_rng(0)
    multi = (g.random((500, 6)) < [0.5, 0.3, 0.2, 0.1, 0.01, 0.0]).astype(np.int64)
    small, large = fraction_subset(multi, 0.02, 3), fraction_subset(multi, 0.2, 3)
    assert 10 <= len(small) <= 10 + 6 and len(large) >= 100 and set(small) <= set(large)
    assert (multi[small][:, :5].sum(0) > 0).all() and np.array_equal(small, fraction_subset(multi, 0.02, 3))


def test_fraction_rows_reuse_one_feature_pass_per_seed(eurosat_small, tmp_path):
    rows = evaluate(
        cfg(eurosat_small, tmp_path, protocol=["knn", "linear"], seeds=[0, 1], fractions=[1.0, 0.1]), console=quiet()
    )
    keys = [(r["seed"], r["label_fraction"], r["protocol"], r["metric"]) for r in rows]
    assert len(keys) == len(set(keys)) == 2 * 2 * (2 + 3)  # knn: accuracy, f1; linear: + ece
    assert {r["n_train"] for r in rows if r["label_fraction"] == 0.1} == {20}  # 16 train per class -> 2
    assert {r["n_train"] for r in rows if r["label_fraction"] == 1.0} == {160}
    # One feature pass per seed (its train split sets the normalization; random init is drawn per seed),
    # shared by both fractions and both probes.
    assert len({r["features_key"] for r in rows}) == 2 and len(list((tmp_path / "features").glob("*.pt"))) == 2
    assert all(len({r["features_key"] for r in rows if r["seed"] == s}) == 1 for s in (0, 1))
    small = [r for r in rows if r["label_fraction"] == 0.1 and r["metric"] == "accuracy"]
    assert all(0 <= r["value"] <= 1 for r in small)
    # Each (seed, fraction) probe is saved separately.
    assert len({r["probe_path"] for r in rows if r["protocol"] == "linear"}) == 4


# ---------------------------------------------------------------- multi-label


def reference_ap(scores: list[float], target: list[int]) -> float:
    """Average precision: mean over positives of the precision at the positive's rank (distinct scores)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    hits, precisions = 0, []
    for rank, i in enumerate(order, start=1):
        if target[i]:
            hits += 1
            precisions.append(hits / rank)
    return sum(precisions) / len(precisions)


def test_multilabel_metrics_match_hand_computation():
    scores = torch.tensor(
        [
            [0.9, 0.2, 0.6, 0.1],
            [0.8, 0.7, 0.3, 0.2],
            [0.4, 0.1, 0.8, 0.3],
            [0.3, 0.6, 0.45, 0.15],
            [0.1, 0.55, 0.7, 0.05],
        ]
    )
    target = torch.tensor([[1, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0]])
    # Label 3 has no positives: undefined AP/recall, so it is left out of both macro averages.
    aps = [reference_ap(scores[:, c].tolist(), target[:, c].tolist()) for c in range(3)]
    # label 0: positives ranked 1 (0.9) and 3 (0.4) -> (1 + 2/3) / 2; label 1: ranked 1 (0.7), 2 (0.6) -> 1;
    # label 2: 0.8 (neg), 0.7, 0.6, 0.45 (pos) -> positives at ranks 2, 3, 4 -> (1/2 + 2/3 + 3/4) / 3
    assert aps == pytest.approx([5 / 6, 1.0, (1 / 2 + 2 / 3 + 3 / 4) / 3])
    pred = scores >= 0.5
    f1 = []
    for c in range(3):
        tp = int((pred[:, c] & (target[:, c] == 1)).sum())
        fp, fn = int(pred[:, c].sum()) - tp, int(target[:, c].sum()) - tp
        f1.append(2 * tp / (2 * tp + fp + fn))
    m = multilabel_metrics(scores, target)
    assert m["map"] == pytest.approx(sum(aps) / 3) and m["f1_macro"] == pytest.approx(sum(f1) / 3)


def test_knn_multilabel_matches_plain_python():
    g = torch.Generator().manual_seed(0)
    bank, queries = torch.randn(30, 5, generator=g), torch.randn(7, 5, generator=g)
    labels = (torch.rand(30, 4, generator=g) < 0.4).long()
    scores, k = knn_multilabel_scores(bank, labels, queries, k=6, temperature=0.1)
    assert k == 6
    for q, row in zip(queries.tolist(), scores.tolist()):
        sims = []
        for b, y in zip(bank.tolist(), labels.tolist()):
            cos = sum(a * c for a, c in zip(q, b)) / math.sqrt(sum(a * a for a in q) * sum(c * c for c in b))
            sims.append((cos, y))
        top = sorted(sims, key=lambda s: -s[0])[:6]
        w = [math.exp(s / 0.1) for s, _ in top]
        expected = [sum(wi * y[c] for wi, (_, y) in zip(w, top)) / sum(w) for c in range(4)]
        assert row == pytest.approx(expected, abs=1e-5)


GROUPS = {
    "vegetation": {"AnnualCrop", "Forest", "HerbaceousVegetation", "Pasture", "PermanentCrop"},
    "water": {"River", "SeaLake"},
    "built": {"Highway", "Industrial", "Residential", "River"},
}


def test_multilabel_csv_on_real_eurosat(eurosat_small, tmp_path):
    """A real multi-label task: each EuroSAT image gets its land-cover groups (River is water AND built)."""
    lines = ["image,labels"]
    for p in sorted(eurosat_small.rglob("*.jpg")):
        lines.append(f"{p},{';'.join(sorted(g for g, members in GROUPS.items() if p.parent.name in members))}")
    (tmp_path / "multi.csv").write_text("\n".join(lines) + "\n")
    rows = evaluate(cfg(tmp_path / "multi.csv", tmp_path / "out", protocol=["knn", "linear"]), console=quiet())
    rows += evaluate(
        cfg(
            tmp_path / "multi.csv",
            tmp_path / "out-32px",  # another input size: its own results folder (comparability check)
            protocol=["finetune"],
            image_size=32,
            epochs=1,
            fractions=[0.1],
            batch_size=32,
        ),
        console=quiet(),
    )
    assert [(r["protocol"], r["metric"]) for r in rows] == [
        (p, m) for p in ("knn", "linear", "finetune") for m in ("map", "map_micro", "f1_macro")
    ]
    assert {r["num_classes"] for r in rows} == {3} and {r["dataset"] for r in rows} == {"multi"}
    assert all(r["split"].startswith("random test_fraction=0.2") and r["n_test"] == 40 for r in rows)
    assert rows[-1]["n_train"] == 16 and rows[-1]["label_fraction"] == 0.1
    value = {(r["protocol"], r["metric"]): r["value"] for r in rows}
    assert all(0 <= v <= 1 for v in value.values())
    # Random scores have an expected AP equal to each label's prevalence (0.5, 0.4, 0.2 here).
    assert value[("knn", "map")] > 0.55 and value[("linear", "map")] > 0.55, value
    linear = rows[3]
    probe = torch.load(linear["probe_path"], weights_only=True)
    assert probe["multilabel"] is True and probe["weight"].shape == (3, 512)
    assert "BCE" in linear["hparams"]["objective"]
    # The headline (macro mAP) is recomputed from the per-example scores, independently of torchmetrics.
    from sklearn.metrics import average_precision_score

    from rsbench.contracts.predictions import read_predictions
    from rsbench.report.recompute import metric_on_examples

    for r in (rows[0], rows[3], rows[6]):
        meta, cols = read_predictions(r["predictions_path"])
        assert meta["kind"] == "multilabel" and cols["scores"].shape == (40, 3)
        present = cols["y_true"].sum(0) > 0
        ref = np.mean(
            [average_precision_score(cols["y_true"][:, c], cols["scores"][:, c]) for c in np.flatnonzero(present)]
        )
        assert r["value"] == pytest.approx(ref, abs=1e-5)
        assert metric_on_examples(r["predictions_path"], "map").point() == pytest.approx(ref, abs=1e-5)


# ---------------------------------------------------------------- fine-tuning


def test_finetune_few_steps_on_real_eurosat(eurosat_small, tmp_path):
    rows = evaluate(
        cfg(eurosat_small, tmp_path, protocol=["finetune"], image_size=32, epochs=1, batch_size=32, fractions=[0.5]),
        console=quiet(),
    )
    acc, f1, ece = rows
    assert ece["metric"] == "ece" and 0 <= ece["value"] <= 1 and not ece["headline"]
    assert (acc["metric"], f1["metric"]) == ("accuracy", "f1_macro") and 0 <= acc["value"] <= 1
    hp = acc["hparams"]
    assert hp["steps"] == 3 and hp["epochs"] == 1 and hp["layer_decay"] is None  # 80 images / 32; ResNet
    assert acc["fit_time_s"] > 0 and acc["eval_time_s"] > 0 and acc["extract_time_s"] is None
    # The saved weights reproduce the reported accuracy on the test split: they are the fitted ones.
    state = torch.load(acc["probe_path"], weights_only=True)
    model = timm.create_model("resnet18", num_classes=10)
    model.load_state_dict({**state["backbone"], **{f"fc.{k}": v for k, v in state["head"].items()}})
    model.eval()
    _, test = stratified_split(index_image_folder(eurosat_small).labels, 0.2, 0)
    paths = [index_image_folder(eurosat_small).paths[i] for i in test]
    mean, std = (torch.tensor(state["normalization"][k])[:, None, None] for k in ("mean", "std"))
    x = torch.stack([torch.from_numpy(np.asarray(Image.open(p)).transpose(2, 0, 1).astype(np.float32)) for p in paths])
    x = torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
    with torch.no_grad():
        preds = model((x - mean) / std).argmax(1)
    truth = torch.as_tensor(index_image_folder(eurosat_small).labels[test])
    assert (preds == truth).float().mean().item() == pytest.approx(acc["value"])


def test_validation_holdout_never_reads_the_test_split_and_stops_early(eurosat_small, tmp_path):
    import pyarrow.parquet as pq

    def paths(row) -> set[str]:
        return set(pq.read_table(row["predictions_path"], columns=["path"]).column("path").to_pylist())

    knn = cfg(eurosat_small, tmp_path / "t", protocol=["knn"], image_size=32)
    [test_row] = [r for r in evaluate(knn, quiet()) if r["headline"]]
    options = dict(protocol=["finetune"], image_size=32, epochs=2, batch_size=32, weight_decay=0.01)
    rows = evaluate(cfg(eurosat_small, tmp_path / "v", holdout="validation", early_stop_patience=1, **options), quiet())
    val = next(r for r in rows if r["headline"])
    # 20 per class: 4 test, then round(0.2 x 16) = 3 validation and 13 train
    assert val["split"].startswith("validation: stratified 0.2 of the train split") and val["n_test"] == 30
    assert test_row["n_test"] == 40 and val["n_train"] == 130
    assert not paths(val) & paths(test_row), "validation images are never test images"
    hp = val["hparams"]
    assert hp["weight_decay"] == val["weight_decay"] == 0.01 and hp["early_stop_patience"] == 1
    assert 1 <= hp["epochs_trained"] <= 2 and hp["steps"] == 5 * hp["epochs_trained"]  # 130 / 32 per epoch


def test_vit_finetune_uses_layer_wise_lr_decay():
    backbone = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32)
    head = torch.nn.Linear(backbone.num_features, 10)
    groups = param_groups(backbone, head, lr=1e-3, weight_decay=0.05, layer_decay=0.5)
    module = TrainingModule(
        torch.nn.Sequential(backbone, head),
        lambda m, b: m(b).sum(),
        groups,
        total_steps=10,
        warmup_fraction=0.1,
        weight_decay=0.05,
    )
    opt = module.configure_optimizers()["optimizer"]
    lrs = {g["lr"] for g in opt.param_groups}
    # Embedding 0.5 ** 12, block i 0.5 ** (11 - i), the last block and the head the full LR.
    assert sorted(lrs) == pytest.approx(sorted(1e-3 * 0.5**i for i in range(13)))
    by_name = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert by_name[id(backbone.patch_embed.proj.weight)] == pytest.approx(1e-3 * 0.5**12)
    assert by_name[id(backbone.blocks[0].attn.qkv.weight)] == pytest.approx(1e-3 * 0.5**11)
    assert by_name[id(head.weight)] == pytest.approx(1e-3)
    assert all(g["weight_decay"] == 0 for g in opt.param_groups if any(p is backbone.pos_embed for p in g["params"]))


# ---------------------------------------------------------------- trivial baselines


def test_bandstats_and_pixels_baselines(eurosat_small, tmp_path):
    accs = {}
    for init in ("bandstats", "pixels"):
        rows = evaluate(cfg(eurosat_small, tmp_path, init=init, protocol=["knn", "linear"]), console=quiet())
        accs.update({(init, r["protocol"]): r["value"] for r in rows if r["metric"] == "accuracy"})
        assert rows[0]["init_kind"] == init and rows[0]["feature_dim"] == {"bandstats": 15, "pixels": 192}[init]
    assert all(v > 0.2 for v in accs.values()), accs  # chance 0.1
    assert accs[("bandstats", "knn")] > 0.3, accs

    # Feature values against numpy on image 0: per-band stats of the normalized image, 8x8 block means.
    caches = sorted((tmp_path / "features").glob("*.pt"))
    assert len(caches) == 2
    norm = torch.load(caches[0], weights_only=True)["normalization"]
    first = sorted(sorted(p for p in eurosat_small.iterdir())[0].iterdir())[0]
    x = (
        np.asarray(Image.open(first)).transpose(2, 0, 1).astype(np.float64) - np.array(norm["mean"])[:, None, None]
    ) / np.array(norm["std"])[:, None, None]
    flat = x.reshape(3, -1)
    bandstats = np.concatenate([flat.mean(1), flat.std(1), *np.percentile(flat, [1, 50, 99], axis=1)])
    pixels = x.reshape(3, 8, 8, 8, 8).mean(axis=(2, 4)).reshape(-1)
    for f in caches:
        got = torch.load(f, weights_only=True)["features"][0].double().numpy()
        assert np.allclose(got, bandstats if len(got) == 15 else pixels, atol=1e-4)
