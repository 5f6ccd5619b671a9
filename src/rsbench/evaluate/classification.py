"""Scene classification (single- and multi-label): frozen features + kNN / linear probes, or fine-tuning.

Per seed: a train/test split (or the fixed test set), band statistics of that train split, then per
label fraction a nested subset of the train split, then each protocol. Features are extracted once per
(seed's init, normalization) for all images and reused by every fraction and probe, so a fixed test set
means one extraction; fine-tuning trains a fresh copy of the backbone per (seed, fraction). Every cell
writes its per-example test outputs (rsbench.contracts.predictions) beside its result rows.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from rsbench.contracts.evaluate_config import EvaluateConfig
from rsbench.contracts.results import headline_metric
from rsbench.data.normalization import Normalization
from rsbench.errors import ConfigError, DataError
from rsbench.evaluate.cls_data import ClassificationData, load_classification
from rsbench.evaluate.driver import CellResult, Predictions, SeedSplit, run_cells
from rsbench.evaluate.features import FeatureSet, describe_resize, get_features, resolve_device, train_normalization
from rsbench.evaluate.inits import Init, resolve_init
from rsbench.evaluate.multilabel import knn_multilabel_scores, multilabel_metrics
from rsbench.evaluate.probes import (
    C_GRID,
    VAL_FRACTION,
    classification_metrics,
    expected_calibration_error,
    fit_logistic_probe,
    knn5_classify,
    knn_classify,
    per_class_metrics,
)
from rsbench.evaluate.results import cell_hash, row_patch_size
from rsbench.evaluate.splits import fraction_subset, random_split, stratified_split, validation_split
from rsbench.evaluate.tasks import register_task
from rsbench.io import atomic_write_bytes, stable_hash

# ECE (lower is better) is reported beside the probes that give probabilities; it never ranks a task.
SINGLE_LABEL_METRICS = ("accuracy", "f1_macro")
MULTI_LABEL_METRICS = ("map", "map_micro", "f1_macro")
ECE_BINS = 15


@dataclass
class ProbeOutput:
    """What a protocol predicts on the test split: class ids (N,) and, where the protocol has them, class
    probabilities (N, C); multi-label: per-label scores (N, C) in both."""

    preds: torch.Tensor
    probs: torch.Tensor | None
    fields: dict
    state: dict | None


# probe(cfg, x_train, y_train, x_test, num_classes, seed, multilabel) -> ProbeOutput
Probe = Callable[[EvaluateConfig, torch.Tensor, torch.Tensor, torch.Tensor, int, int, bool], ProbeOutput]


def _knn(cfg, xtr, ytr, xte, num_classes, seed, multilabel):
    if multilabel:
        out, k = knn_multilabel_scores(xtr, ytr, xte, k=cfg.knn_k, temperature=cfg.knn_temperature)
        return ProbeOutput(out, out, {"k": k, "temperature": cfg.knn_temperature}, None)
    out, k = knn_classify(xtr, ytr, xte, num_classes, k=cfg.knn_k, temperature=cfg.knn_temperature)
    return ProbeOutput(out, None, {"k": k, "temperature": cfg.knn_temperature}, None)


def _knn5(cfg, xtr, ytr, xte, num_classes, seed, multilabel):
    if multilabel:
        raise ConfigError("protocol 'knn5' is single-label only (torchgeo-bench's 5-NN); use knn or linear")
    out, k = knn5_classify(xtr, ytr, xte)
    return ProbeOutput(
        out,
        None,
        {"k": k, "hparams": {"distance": "l2", "weights": "uniform", "reference": "torchgeo-bench kNN (k=5)"}},
        None,
    )


def _linear(cfg, xtr, ytr, xte, num_classes, seed, multilabel):
    grid = tuple(cfg.linear_c_grid) if cfg.linear_c_grid else C_GRID
    probe = fit_logistic_probe(xtr, ytr, num_classes, seed, c_grid=grid, multilabel=multilabel)
    probs = probe.predict_proba(xte).float()
    hparams = {
        "C": probe.C,
        "c_grid": [float(c) for c in grid],
        "val_fraction": VAL_FRACTION,
        "selection": "val mAP" if multilabel else "val accuracy",
        "refit": "train + val",
        "objective": "mean " + ("BCE" if multilabel else "cross-entropy") + " + ||W||^2 / (2 C n) (sklearn's)",
        "features": "standardized with the train mean/std",
        "optimizer": "lbfgs",
    }
    preds = probs if multilabel else probs.argmax(1)
    return ProbeOutput(
        preds, probs, {"weight_decay": 1.0 / (probe.C * len(xtr)), "hparams": hparams}, probe.state_dict()
    )


PROBES: dict[str, Probe] = {"knn": _knn, "knn5": _knn5, "linear": _linear}
PROTOCOLS = (*PROBES, "finetune")


def _metrics(out: ProbeOutput, target: torch.Tensor, num_classes: int, multilabel: bool) -> dict[str, float]:
    if multilabel:
        return multilabel_metrics(out.preds, target)
    metrics = classification_metrics(out.preds, target, num_classes)
    if out.probs is not None:
        metrics["ece"] = expected_calibration_error(out.probs, target, n_bins=ECE_BINS)
    return metrics


def _split(data: ClassificationData, cfg: EvaluateConfig, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    train, test, how = _test_split(data, cfg, seed)
    if cfg.holdout == "validation":
        labels = None if data.multilabel else data.labels
        train, val, carved = validation_split(train, cfg.val_fraction, seed, labels)
        return train, val, f"{carved} of {how}"
    return train, test, how


def _test_split(data: ClassificationData, cfg: EvaluateConfig, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    if data.has_test:
        # Fixed split: kNN is then identical across seeds; fractions and the probe's validation split are seeded.
        where = "torchgeo test split" if data.adapter == "torchgeo" and cfg.test_data is None else "--test-data"
        return np.arange(data.n_pool), np.arange(data.n_pool, len(data.images)), f"fixed ({where})"
    if data.multilabel:
        train, test = random_split(data.n_pool, cfg.test_fraction, seed)
        return train, test, f"random test_fraction={cfg.test_fraction} (multi-label)"
    train, test = stratified_split(data.labels, cfg.test_fraction, seed, class_names=data.classes)
    return train, test, f"stratified test_fraction={cfg.test_fraction}"


def _split_spec(data: ClassificationData, cfg: EvaluateConfig, seed: int) -> dict:
    """The rows' split_spec (rsbench.contracts.results) of `_split`."""
    if data.has_test:
        return {"kind": "fixed"}
    return {"kind": "random", "test_fraction": cfg.test_fraction, "seed": seed}


def _check(cfg: EvaluateConfig, data: ClassificationData, init: Init | None = None) -> None:
    if len(data.classes) < 2:
        raise DataError(f"{cfg.data} has {len(data.classes)} class(es); classification needs at least 2")
    metrics = MULTI_LABEL_METRICS if data.multilabel else SINGLE_LABEL_METRICS
    if cfg.metric is not None and cfg.metric not in metrics:
        raise ConfigError(
            f"invalid config key 'metric': '{cfg.metric}' is not reported for "
            f"{'multi' if data.multilabel else 'single'}-label classification ({', '.join(metrics)})"
        )
    if init is not None and "finetune" in cfg.protocol and not init.trainable:
        raise ConfigError(f"protocol 'finetune' needs a network; --init {cfg.init} has no weights to train")


@register_task("classification", protocols=PROTOCOLS)
def run_classification(cfg: EvaluateConfig, console: Console) -> list[dict]:
    data = load_classification(cfg)
    _check(cfg, data)
    first = data.images.read(0)
    if cfg.bands is None and data.band_names:
        cfg = cfg.model_copy(update={"bands": data.band_names})  # maps the bands onto published weights
    init = resolve_init(cfg, first.shape[0], console)
    _check(cfg, data, init)
    headline = cfg.metric or headline_metric(
        "classification-multilabel" if data.multilabel else "classification",
        list(MULTI_LABEL_METRICS if data.multilabel else SINGLE_LABEL_METRICS),
    )
    base = {
        "task": "classification",
        "dataset": data.name,
        "init": init.name,
        "init_kind": init.kind,
        "init_path": init.path,
        "backbone": init.arch,
        "num_classes": len(data.classes),
        "image_size": init.image_size,
        "patch_size": row_patch_size(cfg, init),
        "band_mapping": getattr(init, "band_mapping", None),
        "data": str(cfg.data.resolve()),
        "test_data": str(cfg.test_data.resolve()) if cfg.test_data else None,
        "k": None,
        "temperature": None,
        "weight_decay": None,
        "hparams": None,
    }
    return run_cells(cfg, _Cells(cfg, data, init, first.shape, console), base, headline, data.classes)


class _Cells:
    """Classification on the evaluation driver: index splits, features shared by a seed's probes."""

    def __init__(self, cfg: EvaluateConfig, data: ClassificationData, init: Init, first_shape, console: Console):
        self.cfg, self.data, self.init, self.first_shape, self.console = cfg, data, init, first_shape, console
        self.labels = torch.as_tensor(data.labels)
        self.paths = [data.images.describe(i).removeprefix("image ") for i in range(len(data.images))]
        self.images_id = stable_hash(data.images.identity())  # stats every file: once, not per seed

    def split(self, seed: int) -> SeedSplit:
        cfg, data, init, console = self.cfg, self.data, self.init, self.console
        train_all, test_idx, split = _split(data, cfg, seed)
        seed_init = init.for_seed(seed)  # random init: one draw per seed, so its variance is compared too
        fs = None
        if any(p in PROBES for p in cfg.protocol):
            fs = get_features(
                seed_init,
                data.images,
                data.labels,
                train_all,
                cfg.out / "features",
                cfg.batch_size,
                resolve_device(cfg.device),
                console,
            )
            how = "from cache" if fs.cached else f"extracted in {fs.extract_time_s:.1f}s"
            console.print(
                f"seed {seed}: features of {len(data.images)} images {how}: {fs.path}", markup=False, highlight=False
            )
            norm_dict, resize = fs.normalization, fs.resize
        else:
            norm_dict = train_normalization(seed_init, data.images, train_all, console).to_dict() | init.band_info()
            resize = describe_resize({f"{self.first_shape[2]}x{self.first_shape[1]}"}, init.image_size)
        if cfg.bands and "bands" not in norm_dict:
            norm_dict = {**norm_dict, "bands": list(cfg.bands)}  # the data's band names, when known
        split_id = stable_hash({"images": self.images_id, "test": test_idx.tolist()})
        return SeedSplit(
            train_all,
            test_idx,
            split,
            {
                "normalization": norm_dict,
                "resize": resize,
                "test_split_id": split_id,
                "split_spec": _split_spec(data, cfg, seed),
            },
            {"init": seed_init, "features": fs},
        )

    def subset(self, split: SeedSplit, fraction: float, seed: int) -> np.ndarray:
        train_all = split.train
        return train_all[fraction_subset(self.data.labels[train_all], fraction, seed)] if fraction < 1 else train_all

    def run(self, protocol: str, split: SeedSplit, train_idx, seed: int, fields) -> CellResult:
        cfg, data, test_idx, fs = self.cfg, self.data, split.test, split.context["features"]
        updates: dict = {}
        if protocol == "finetune":
            out = _finetune(
                cfg,
                data,
                split.context["init"],
                split.fields["normalization"],
                train_idx,
                test_idx,
                seed,
                self.console,
                updates,
            )
        else:
            out = _probe(cfg, protocol, fs, data, train_idx, test_idx, seed, updates)
            if cfg.save_features:
                _save_features(cfg, fields, fs, train_idx, test_idx, self.paths, self.console)
        state = None if out.state is None else {**out.state, "classes": data.classes, "multilabel": data.multilabel}
        target = self.labels[test_idx]
        return CellResult(
            _metrics(out, target, len(data.classes), data.multilabel),
            updates,
            state,
            _predictions(data, out, target, test_idx, self.paths),
        )


def _predictions(data, out: ProbeOutput, target, test_idx, paths) -> Predictions:
    """Per-example test outputs (rsbench.contracts.predictions), from which every metric is recomputed."""
    columns: dict = {"index": np.asarray(test_idx, dtype=np.int64), "path": [paths[i] for i in test_idx]}
    if data.multilabel:
        columns |= {"y_true": target.numpy().astype(np.int8), "scores": out.preds.float().numpy()}
        return Predictions("multilabel", columns)
    columns |= {"y_true": target.numpy(), "y_pred": out.preds.numpy().astype(np.int64)}
    if out.probs is not None:
        columns["probs"] = out.probs.float().numpy()
    return Predictions(
        "classification", columns, {"per_class": per_class_metrics(target, out.preds, len(data.classes))}
    )


def _save_features(cfg, fields, fs: FeatureSet, train_idx, test_idx, paths, console) -> None:
    """--save-features: the exact features the probes saw, for a user's own probes (documented in README)."""
    # One file per (init, seed, label fraction, input shape): every probe of that cell saw these features.
    path = Path(cfg.out) / "saved_features" / f"{cell_hash({**fields, 'protocol': None})}.npz"
    if path.is_file():
        return
    buf = io.BytesIO()
    tr, te = torch.as_tensor(train_idx), torch.as_tensor(test_idx)
    np.savez(
        buf,
        train_x=fs.features[tr].numpy(),
        train_y=fs.labels[tr].numpy(),
        test_x=fs.features[te].numpy(),
        test_y=fs.labels[te].numpy(),
        train_index=np.asarray(train_idx),
        test_index=np.asarray(test_idx),
        paths=np.asarray([paths[i] for i in test_idx]),
        train_paths=np.asarray([paths[i] for i in train_idx]),
    )
    atomic_write_bytes(path, buf.getvalue())
    console.print(f"features saved: {path}", markup=False, highlight=False)


def _probe(cfg, protocol, fs, data, train_idx, test_idx, seed, fields) -> ProbeOutput:
    tr, te = torch.as_tensor(train_idx), torch.as_tensor(test_idx)
    start = time.perf_counter()
    out = PROBES[protocol](
        cfg, fs.features[tr], fs.labels[tr], fs.features[te], len(data.classes), seed, data.multilabel
    )
    fields.update(
        out.fields,
        fit_time_s=round(time.perf_counter() - start, 3),
        eval_time_s=None,
        feature_dim=int(fs.features.shape[1]),
        extract_time_s=round(fs.extract_time_s, 3),
        eval_images_per_s=round(len(fs.features) / fs.extract_time_s, 2) if fs.extract_time_s else None,
        features_cached=fs.cached,
        features_key=fs.key,
    )
    return out


def _finetune(cfg, data, init, norm_dict, train_idx, test_idx, seed, console, fields) -> ProbeOutput:
    from rsbench.evaluate.finetune import finetune  # Lightning import only when fine-tuning

    res = finetune(
        cfg,
        init,
        data.images,
        data.labels,
        len(data.classes),
        data.multilabel,
        Normalization.from_dict(norm_dict),
        train_idx,
        test_idx,
        seed,
        console,
    )
    fields.update(
        weight_decay=res.hparams["weight_decay"],
        hparams=res.hparams,
        fit_time_s=round(res.fit_time_s, 3),
        eval_time_s=round(res.eval_time_s, 3),
        feature_dim=int(res.state["head"]["weight"].shape[1]),
        extract_time_s=None,
        features_cached=None,
        features_key=None,
        eval_images_per_s=round(len(test_idx) / res.eval_time_s, 2) if res.eval_time_s else None,
    )
    state = {
        **res.state,
        "arch": init.arch,
        "in_chans": init.in_chans,
        "image_size": init.image_size,
        "normalization": norm_dict,
    }
    preds = res.scores if data.multilabel else res.scores.argmax(1)
    return ProbeOutput(preds, res.scores, {}, state)
