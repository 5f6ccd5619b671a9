"""Scene classification (single- and multi-label): frozen features + kNN / linear probes, or fine-tuning.

Per seed: a train/test split (or the fixed test set), then per label fraction a nested subset of the
train split, then each protocol. Features are extracted once for all images and reused by every
(seed, fraction, probe); fine-tuning trains a fresh copy of the backbone per (seed, fraction).
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
from rich.console import Console

from rsbench.data.normalization import Normalization
from rsbench.errors import ConfigError, DataError
from rsbench.evaluate.cls_data import ClassificationData, load_classification
from rsbench.evaluate.config import EvaluateConfig
from rsbench.evaluate.features import describe_resize, get_features, pool_normalization, resolve_device
from rsbench.evaluate.inits import Init, resolve_init
from rsbench.evaluate.multilabel import knn_multilabel_scores, multilabel_metrics
from rsbench.evaluate.probes import VAL_FRACTION, classification_metrics, fit_linear_probe, knn_classify
from rsbench.evaluate.results import make_row, probe_file, save_tensors
from rsbench.evaluate.splits import fraction_subset, random_split, stratified_split
from rsbench.evaluate.tasks import register_task

SINGLE_LABEL_METRICS = ("accuracy", "f1_macro")
MULTI_LABEL_METRICS = ("map", "f1_macro")

# probe(cfg, x_train, y_train, x_test, num_classes, seed, multilabel)
#   -> (test outputs: class ids (N,) or label scores (N, C), row fields, fitted state or None)
Probe = Callable[[EvaluateConfig, torch.Tensor, torch.Tensor, torch.Tensor, int, int, bool],
                 tuple[torch.Tensor, dict, dict | None]]


def _knn(cfg, xtr, ytr, xte, num_classes, seed, multilabel):
    if multilabel:
        out, k = knn_multilabel_scores(xtr, ytr, xte, k=cfg.knn_k, temperature=cfg.knn_temperature)
    else:
        out, k = knn_classify(xtr, ytr, xte, num_classes, k=cfg.knn_k, temperature=cfg.knn_temperature)
    return out, {"k": k, "temperature": cfg.knn_temperature}, None


def _linear(cfg, xtr, ytr, xte, num_classes, seed, multilabel):
    probe = fit_linear_probe(xtr, ytr, num_classes, cfg.linear_weight_decays, seed, multilabel=multilabel)
    out = torch.sigmoid(probe.logits(xte)) if multilabel else probe.predict(xte)
    hparams = {"weight_decays": list(cfg.linear_weight_decays), "val_fraction": VAL_FRACTION,
               "selection": "val mAP" if multilabel else "val accuracy", "optimizer": "lbfgs",
               "loss": "bce" if multilabel else "cross-entropy"}
    return out, {"weight_decay": probe.weight_decay, "hparams": hparams}, probe.state_dict()


PROBES: dict[str, Probe] = {"knn": _knn, "linear": _linear}
PROTOCOLS = (*PROBES, "finetune")


def _metrics(outputs: torch.Tensor, target: torch.Tensor, num_classes: int, multilabel: bool) -> dict[str, float]:
    if multilabel:
        return multilabel_metrics(outputs, target)
    return classification_metrics(outputs, target, num_classes)


def _split(data: ClassificationData, cfg: EvaluateConfig, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    if data.has_test:
        # Fixed split: kNN is then identical across seeds; fractions and the probe's validation split are seeded.
        where = "torchgeo test split" if data.adapter == "torchgeo" and cfg.test_data is None else "--test-data"
        return np.arange(data.n_pool), np.arange(data.n_pool, len(data.images)), f"fixed ({where})"
    if data.multilabel:
        train, test = random_split(data.n_pool, cfg.test_fraction, seed)
        return train, test, f"random test_fraction={cfg.test_fraction} (multi-label)"
    train, test = stratified_split(data.labels, cfg.test_fraction, seed, class_names=data.classes)
    return train, test, f"stratified test_fraction={cfg.test_fraction}"


def _check(cfg: EvaluateConfig, data: ClassificationData, init: Init | None = None) -> None:
    if len(data.classes) < 2:
        raise DataError(f"{cfg.data} has {len(data.classes)} class(es); classification needs at least 2")
    metrics = MULTI_LABEL_METRICS if data.multilabel else SINGLE_LABEL_METRICS
    if cfg.metric is not None and cfg.metric not in metrics:
        raise ConfigError(f"invalid config key 'metric': '{cfg.metric}' is not reported for "
                          f"{'multi' if data.multilabel else 'single'}-label classification ({', '.join(metrics)})")
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

    fs = None
    if any(p in PROBES for p in cfg.protocol):
        fs = get_features(init, data.images, data.labels, data.n_pool, cfg.out / "features", cfg.batch_size,
                          resolve_device(cfg.device), console)
        how = "from cache" if fs.cached else f"extracted in {fs.extract_time_s:.1f}s"
        console.print(f"features of {len(data.images)} images {how}: {fs.path}", markup=False, highlight=False)
    if fs is not None:
        norm_dict, resize = fs.normalization, fs.resize
    else:
        norm_dict = pool_normalization(init, data.images, data.n_pool, console).to_dict() | init.band_info()
        resize = describe_resize({f"{first.shape[2]}x{first.shape[1]}"}, init.image_size)
    if cfg.bands and "bands" not in norm_dict:
        norm_dict = {**norm_dict, "bands": list(cfg.bands)}  # the data's band names, when known

    num_classes = len(data.classes)
    base = {
        "task": "classification", "dataset": data.name, "init": init.name, "init_kind": init.kind,
        "init_path": init.path, "backbone": init.arch, "num_classes": num_classes,
        "image_size": init.image_size, "normalization": norm_dict, "resize": resize,
        "data": str(cfg.data.resolve()), "test_data": str(cfg.test_data.resolve()) if cfg.test_data else None,
    }
    labels = torch.as_tensor(data.labels)
    rows = []
    for seed in cfg.seeds:
        train_all, test_idx, split = _split(data, cfg, seed)
        for fraction in cfg.fractions:
            train_idx = train_all[fraction_subset(data.labels[train_all], fraction, seed)] if fraction < 1 else train_all
            for protocol in cfg.protocol:
                fields = {**base, "protocol": protocol, "seed": seed, "label_fraction": fraction,
                          "n_train": len(train_idx), "n_test": len(test_idx), "split": split,
                          "k": None, "temperature": None, "weight_decay": None, "hparams": None, "probe_path": None}
                if protocol == "finetune":
                    outputs, state = _finetune(cfg, data, init, norm_dict, train_idx, test_idx, seed, console, fields)
                else:
                    outputs, state = _probe(cfg, protocol, fs, data, train_idx, test_idx, seed, fields)
                if state is not None:
                    path = probe_file(cfg.out, fields)
                    save_tensors(path, {**state, "classes": data.classes, "multilabel": data.multilabel})
                    fields["probe_path"] = str(path.resolve())
                for metric, value in _metrics(outputs, labels[test_idx], num_classes, data.multilabel).items():
                    rows.append(make_row(**fields, metric=metric, value=value))
    return rows


def _probe(cfg, protocol, fs, data, train_idx, test_idx, seed, fields) -> tuple[torch.Tensor, dict | None]:
    tr, te = torch.as_tensor(train_idx), torch.as_tensor(test_idx)
    start = time.perf_counter()
    outputs, extra, state = PROBES[protocol](cfg, fs.features[tr], fs.labels[tr], fs.features[te],
                                             len(data.classes), seed, data.multilabel)
    fields.update(extra, fit_time_s=round(time.perf_counter() - start, 3), eval_time_s=None,
                  feature_dim=int(fs.features.shape[1]), extract_time_s=round(fs.extract_time_s, 3),
                  features_cached=fs.cached, features_key=fs.key)
    return outputs, state


def _finetune(cfg, data, init, norm_dict, train_idx, test_idx, seed, console, fields):
    from rsbench.evaluate.finetune import WEIGHT_DECAY, finetune  # Lightning import only when fine-tuning

    res = finetune(cfg, init, data.images, data.labels, len(data.classes), data.multilabel,
                   Normalization.from_dict(norm_dict), train_idx, test_idx, seed, console)
    fields.update(weight_decay=WEIGHT_DECAY, hparams=res.hparams, fit_time_s=round(res.fit_time_s, 3),
                  eval_time_s=round(res.eval_time_s, 3), feature_dim=int(res.state["head"]["weight"].shape[1]),
                  extract_time_s=None, features_cached=None, features_key=None)
    state = {**res.state, "arch": init.arch, "in_chans": init.in_chans, "image_size": init.image_size,
             "normalization": norm_dict}
    return (res.scores if data.multilabel else res.scores.argmax(1)), state
