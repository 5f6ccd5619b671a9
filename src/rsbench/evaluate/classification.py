"""Image classification on an ImageFolder: frozen features + kNN / linear probes."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch
from rich.console import Console

from rsbench.data.images import index_image_folder, read_image
from rsbench.errors import DataError
from rsbench.evaluate.config import EvaluateConfig
from rsbench.evaluate.features import get_features, resolve_device
from rsbench.evaluate.inits import resolve_init
from rsbench.evaluate.probes import classification_metrics, fit_linear_probe, knn_classify
from rsbench.evaluate.results import make_row, probe_file, save_tensors
from rsbench.evaluate.splits import stratified_split
from rsbench.evaluate.tasks import register_task

# probe(cfg, x_train, y_train, x_test, num_classes, seed) -> (test predictions, hyper-parameters, state or None)
Probe = Callable[[EvaluateConfig, torch.Tensor, torch.Tensor, torch.Tensor, int, int],
                 tuple[torch.Tensor, dict, dict | None]]


def _knn(cfg, xtr, ytr, xte, num_classes, seed):
    preds, k = knn_classify(xtr, ytr, xte, num_classes, k=cfg.knn_k, temperature=cfg.knn_temperature)
    return preds, {"k": k, "temperature": cfg.knn_temperature}, None


def _linear(cfg, xtr, ytr, xte, num_classes, seed):
    probe = fit_linear_probe(xtr, ytr, num_classes, cfg.linear_weight_decays, seed)
    return probe.predict(xte), {"weight_decay": probe.weight_decay}, probe.state_dict()


PROBES: dict[str, Probe] = {"knn": _knn, "linear": _linear}


@register_task("classification", protocols=tuple(PROBES))
def run_classification(cfg: EvaluateConfig, console: Console) -> list[dict]:
    pool = index_image_folder(cfg.data)
    test = index_image_folder(cfg.test_data) if cfg.test_data is not None else None
    if test is not None and test.classes != pool.classes:
        raise DataError(f"class folders of {cfg.test_data} ({', '.join(test.classes)}) differ from "
                        f"those of {cfg.data} ({', '.join(pool.classes)})")
    in_chans = read_image(pool.paths[0]).shape[0]
    init = resolve_init(cfg, in_chans, console)

    n_pool = len(pool.paths)
    paths = pool.paths + (test.paths if test is not None else [])
    labels = np.concatenate([pool.labels, test.labels]) if test is not None else pool.labels
    fs = get_features(init, paths, labels, n_pool, cfg.out / "features", cfg.batch_size,
                      resolve_device(cfg.device), console)
    how = "from cache" if fs.cached else f"extracted in {fs.extract_time_s:.1f}s"
    console.print(f"features of {len(paths)} images {how}: {fs.path}", markup=False, highlight=False)

    num_classes = len(pool.classes)
    base = {
        "task": "classification", "dataset": cfg.data.resolve().name, "init": init.name, "init_kind": init.kind,
        "init_path": init.path, "backbone": init.arch, "label_fraction": 1.0, "num_classes": num_classes,
        "feature_dim": int(fs.features.shape[1]), "image_size": init.image_size, "normalization": fs.normalization,
        "resize": fs.resize, "extract_time_s": round(fs.extract_time_s, 3), "features_cached": fs.cached,
        "features_key": fs.key, "data": str(cfg.data.resolve()),
        "test_data": str(cfg.test_data.resolve()) if cfg.test_data is not None else None,
    }
    rows = []
    for seed in cfg.seeds:
        if test is not None:
            # Fixed split: kNN is then identical across seeds; the linear probe's validation split is seeded.
            train_idx, test_idx, split = np.arange(n_pool), np.arange(n_pool, len(paths)), "fixed (--test-data)"
        else:
            train_idx, test_idx = stratified_split(pool.labels, cfg.test_fraction, seed, class_names=pool.classes)
            split = f"stratified test_fraction={cfg.test_fraction}"
        tr, te = torch.as_tensor(train_idx), torch.as_tensor(test_idx)
        for protocol in cfg.protocol:
            start = time.perf_counter()
            preds, hparams, state = PROBES[protocol](cfg, fs.features[tr], fs.labels[tr], fs.features[te],
                                                     num_classes, seed)
            fit_time = time.perf_counter() - start
            fields = {**base, "protocol": protocol, "seed": seed, "n_train": len(tr), "n_test": len(te),
                      "split": split, "fit_time_s": round(fit_time, 3),
                      "k": None, "temperature": None, "weight_decay": None, "probe_path": None, **hparams}
            if state is not None:
                path = probe_file(cfg.out, fields)
                save_tensors(path, {**state, "classes": pool.classes})
                fields["probe_path"] = str(path.resolve())
            for metric, value in classification_metrics(preds, fs.labels[te], num_classes).items():
                rows.append(make_row(**fields, metric=metric, value=value))
    return rows
