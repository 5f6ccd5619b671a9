"""The exported backbone: what `pretrain` (and the benchmark's checkpoint snapshots) write and `evaluate` reads.

An exported backbone is two files in a directory (a run directory, or a snapshot directory of one):
  backbone.pt   - state_dict of `timm.create_model(arch, in_chans=C, num_classes=0)`
  backbone.json - {"arch", "in_chans", "image_size", "feature_dim", "normalization", "method", "steps",
                   "timm_kwargs" (ViTs: {"img_size", "patch_size"}), "exported_module", ...}
so it loads with plain timm, `timm.create_model(arch, in_chans=C, num_classes=0, **timm_kwargs)` +
`load_state_dict` (`BackboneExport.timm_kwargs` gives those arguments), as well as with
`rsbench.models.load_exported_backbone`.

Both files are written atomically, weights first and metadata last: a present backbone.json marks a
complete export. `exported_module` names the attribute of the SSL method whose weights were exported
(DINO's EMA teacher `teacher_backbone`, else `backbone`); `module_state_dict` takes the same module out
of a Lightning checkpoint's state_dict. `data.band_names` lists the bands the backbone takes, in input
order (corpus runs); distilled backbones add `teacher`: {"source", "kind", "arch", "in_chans", "bands"
(the teacher's), "data_bands" (the data bands it saw, same order), "channels", "normalization",
"sha256" (of the teacher's weights file), ...}.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rsbench.errors import DataError
from rsbench.io import atomic_write_bytes, read_json, write_json

BACKBONE_WEIGHTS = "backbone.pt"
BACKBONE_META = "backbone.json"
DEFAULT_EXPORTED_MODULE = "backbone"


def module_state_dict(state_dict: Mapping[str, Any], module: str = DEFAULT_EXPORTED_MODULE) -> dict[str, Any]:
    """The state_dict of submodule `module` out of a whole model's (a Lightning checkpoint's "state_dict"):
    keys "<module>.<name>" become "<name>"; every other key is dropped."""
    prefix = module + "."
    return {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}


@dataclass(frozen=True)
class BackboneExport:
    """backbone.pt + backbone.json in `dir`."""

    dir: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "dir", Path(self.dir))

    @property
    def weights(self) -> Path:
        return self.dir / BACKBONE_WEIGHTS

    @property
    def meta_path(self) -> Path:
        return self.dir / BACKBONE_META

    def exists(self) -> bool:
        """backbone.json is there: the export is complete (it is written last)."""
        return self.meta_path.is_file()

    def is_complete(self) -> bool:
        """Both files are there."""
        return self.meta_path.is_file() and self.weights.is_file()

    def require(self, what: str = "a finished rsbench run") -> None:
        """DataError unless both files are there."""
        if not self.is_complete():
            raise DataError(f"{self.dir} is not {what} (missing {BACKBONE_META} or {BACKBONE_WEIGHTS})")

    def read_meta(self) -> dict[str, Any]:
        return read_json(self.meta_path)

    def read_state_dict(self) -> dict[str, Any]:
        """backbone.pt as loaded by torch (weights_only, on the CPU)."""
        import torch  # deferred: the contracts import no torch; only reading tensors needs it

        return torch.load(self.weights, map_location="cpu", weights_only=True)

    def write(self, state_dict: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
        """Write the weights (detached, on the CPU), then the metadata: each atomically, metadata last."""
        import torch  # deferred: the contracts import no torch; only serializing tensors needs it

        buf = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, buf)
        atomic_write_bytes(self.weights, buf.getvalue())
        write_json(self.meta_path, dict(meta))  # written last: marks a complete export

    @staticmethod
    def timm_kwargs(meta: Mapping[str, Any]) -> dict[str, Any]:
        """The arguments of `timm.create_model(meta["arch"], **kwargs)` whose state_dict is backbone.pt."""
        return {"in_chans": int(meta["in_chans"]), "num_classes": 0, **(meta.get("timm_kwargs") or {})}


__all__ = ["BACKBONE_META", "BACKBONE_WEIGHTS", "DEFAULT_EXPORTED_MODULE", "BackboneExport", "module_state_dict"]
