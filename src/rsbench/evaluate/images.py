"""Where the images of a labelled dataset come from: files, or samples of a torchgeo dataset.

An `ImageSource` reads image i as a C x H x W array in its stored units and says what identifies the
whole set (for the feature-cache key), so feature extraction, band statistics and fine-tuning do not
care whether the data came from an ImageFolder, a CSV or a torchgeo dataset class.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rsbench.data.images import read_image


class ImageSource:
    def __len__(self) -> int:
        raise NotImplementedError

    def read(self, i: int) -> np.ndarray:
        raise NotImplementedError

    def identity(self) -> list | dict:
        raise NotImplementedError

    def describe(self, i: int) -> str:
        """How to name image i in an error message."""
        return f"image {i}"

    def __add__(self, other: ImageSource) -> ImageSource:
        return ConcatImages([self, other])


class FileImages(ImageSource):
    def __init__(self, paths: Sequence[Path]):
        self.paths = [Path(p) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, i: int) -> np.ndarray:
        return read_image(self.paths[i])

    def identity(self) -> list:
        # path + mtime + size of every file: cheap, and changes whenever a file is rewritten.
        out = []
        for p in self.paths:
            st = p.stat()
            out.append([str(p.resolve()), st.st_mtime_ns, st.st_size])
        return out

    def describe(self, i: int) -> str:
        return f"image {self.paths[i]}"


class TorchgeoImages(ImageSource):
    """The `image` of each sample of a torchgeo NonGeo dataset (loaded with download=False)."""

    def __init__(self, dataset, identity: dict):
        self.dataset, self._identity = dataset, identity

    def __len__(self) -> int:
        return len(self.dataset)

    def read(self, i: int) -> np.ndarray:
        return np.ascontiguousarray(self.dataset[i]["image"].numpy())

    def identity(self) -> dict:
        return self._identity

    def describe(self, i: int) -> str:
        return f"sample {i} of {self._identity.get('dataset')} in {self._identity.get('root')}"


class ConcatImages(ImageSource):
    """A train pool followed by a fixed test set."""

    def __init__(self, parts: list[ImageSource]):
        self.parts = parts
        self.offsets = np.cumsum([0] + [len(p) for p in parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def _locate(self, i: int) -> tuple[ImageSource, int]:
        k = int(np.searchsorted(self.offsets, i, side="right")) - 1
        return self.parts[k], i - int(self.offsets[k])

    def read(self, i: int) -> np.ndarray:
        part, j = self._locate(i)
        return part.read(j)

    def identity(self) -> list:
        return [p.identity() for p in self.parts]

    def describe(self, i: int) -> str:
        part, j = self._locate(i)
        return part.describe(j)
