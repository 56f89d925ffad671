"""isample (Algorithm 2): patch centres drawn where the current model is wrong, exactly and without rejection.

Algorithm 2's inner loop, for one patch: pick an image ``i`` (uniformly), a class ``k`` present in its label map
(uniformly among the ``K_i`` present), a voxel ``c`` of that class (uniformly among its ``n_ik`` voxels), and
accept if ``E_i(c) > U(0, 1)``; otherwise start again. The accepted draws therefore follow

    P(i, k, c) proportional to  (1 / K_i) (1 / n_ik) E_i(c)          for L_i(c) = k,

so the image is chosen in proportion to its accepted mass ``a_i = (1/K_i) sum_k mean_{c in k} E_i(c)``
(``ErrorWeightedImageSampler``), and within the image (class, voxel) in proportion to ``E_i(c) / n_ik``
(``RandErrorWeightedCentresd``). Drawing from these directly costs O(log n) per patch whatever the error level,
while the literal loop needs on average ``1 / mean(E)`` tries, which grows as the model improves.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from monai.transforms import MapTransform, Randomizable
from torch.utils.data import WeightedRandomSampler

from .error_maps import ErrorMapStore

MODES = ("exact", "rejection")


class _DrawTable:
    """Cumulative weights ``w_j = E(order[j]) / n_class(j)`` over the class-sorted voxel order, kept per block of
    ``block`` entries (float64): a draw finds its block by binary search, then its voxel within the block, so the
    table costs 8 bytes per block instead of per voxel."""

    def __init__(self, error: np.ndarray, order: np.ndarray, offsets: np.ndarray, block: int) -> None:
        self.block, self.offsets = block, offsets
        self.counts = np.diff(offsets).astype(np.float64)
        n = len(order)
        sums = np.empty((n + block - 1) // block)
        chunk = block * 4096
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            weights = self.weights(error, order, np.arange(start, stop))
            sums[start // block : (stop + block - 1) // block] = np.add.reduceat(weights, np.arange(0, stop - start, block))
        self.cumulative = np.concatenate([[0.0], np.cumsum(sums)])

    @property
    def total(self) -> float:
        return float(self.cumulative[-1])

    def weights(self, error: np.ndarray, order: np.ndarray, positions: np.ndarray) -> np.ndarray:
        classes = np.searchsorted(self.offsets, positions, side="right") - 1
        return error[order[positions]].astype(np.float64) / self.counts[classes]

    def draw(self, error: np.ndarray, order: np.ndarray, u: np.ndarray) -> np.ndarray:
        """Positions in the class-sorted order for uniform ``u`` in [0, 1)."""
        target = u * self.total
        blocks = np.clip(np.searchsorted(self.cumulative, target, side="right") - 1, 0, len(self.cumulative) - 2)
        rest = target - self.cumulative[blocks]
        positions = blocks[:, None] * self.block + np.arange(self.block)[None, :]
        valid = positions < len(order)
        weights = np.where(valid, self.weights(error, order, np.minimum(positions, len(order) - 1)), 0.0)
        within = (np.cumsum(weights, axis=1) <= rest[:, None]).sum(axis=1)
        # rounding can push the count past the last positive weight of the block: step back onto it
        last_positive = self.block - 1 - np.argmax((weights > 0)[:, ::-1], axis=1)
        return blocks * self.block + np.minimum(within, last_positive)


class RandErrorWeightedCentresd(Randomizable, MapTransform):
    """Draw ``num_samples`` patch centres in one image as Algorithm 2 (lines 5-7) does, given its error map.

    ``mode="exact"`` draws (class, voxel) with probability proportional to ``E(c) / n_k`` from per-class cumulative
    sums (``_DrawTable``, rebuilt in each worker when the map's version changes), O(log n) per draw;
    ``mode="rejection"`` runs the paper's literal accept/reject loop, for comparison. Without a ``store``, or
    before the case's map is first refreshed (all ones), both reduce to class-balanced sampling: a class uniform
    among those present, a voxel uniform within it.

    Reads the class-sorted voxel index of ``ClassIndexd`` and the case index of ``load_datalist``; writes
    ``centres_key`` (``(num_samples, 3)`` voxel coordinates) and ``classes_key``.
    """

    def __init__(
        self,
        label_key: str = "label",
        num_samples: int = 1,
        store: ErrorMapStore | None = None,
        mode: str = "exact",
        index_key: str = "case_index",
        prefix: str = "class_index",
        centres_key: str = "patch_centres",
        classes_key: str = "patch_classes",
        block: int = 256,
    ) -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        super().__init__([label_key])
        self.label_key, self.num_samples, self.store, self.mode = label_key, num_samples, store, mode
        self.index_key, self.prefix, self.centres_key, self.classes_key = index_key, prefix, centres_key, classes_key
        self.block = block
        self._tables: dict[int, tuple[int, _DrawTable]] = {}

    def randomize(self, data: None = None) -> None:
        """Draws happen in ``__call__`` (their number depends on the image)."""

    def _table(self, index: int, error: np.ndarray, order: np.ndarray, offsets: np.ndarray) -> _DrawTable:
        version = self.store.version(index)
        cached = self._tables.get(index)
        if cached is None or cached[0] != version:
            cached = (version, _DrawTable(error, order, offsets, self.block))
            self._tables[index] = cached
        return cached[1]

    def _balanced(self, counts: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        present = np.flatnonzero(counts)
        classes = self.R.choice(present, size=self.num_samples)
        return offsets[classes] + np.minimum((self.R.random(self.num_samples) * counts[classes]).astype(np.int64),
                                             counts[classes] - 1)  # fmt: skip

    def _rejection(self, error: np.ndarray, order: np.ndarray, counts: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        present = np.flatnonzero(counts)
        picks = []
        while len(picks) < self.num_samples:
            k = present[self.R.randint(len(present))]
            position = offsets[k] + self.R.randint(counts[k])
            if error[order[position]] > self.R.random():
                picks.append(position)
        return np.asarray(picks, dtype=np.int64)

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        offsets, order = d[f"{self.prefix}_offsets"], d[f"{self.prefix}_order"]
        counts = np.diff(offsets)
        if not counts.any():
            raise ValueError("cannot draw patch centres from an empty label index")
        index = int(d[self.index_key]) if self.store is not None else -1
        if self.store is None or (self.mode == "exact" and self.store.version(index) == 0):
            positions = self._balanced(counts, offsets)
        else:
            error = self.store.map(index).reshape(-1)
            if self.mode == "rejection":
                positions = self._rejection(error, order, counts, offsets)
            else:
                table = self._table(index, error, order, offsets)
                if table.total > 0:
                    positions = table.draw(error, order, self.R.random(self.num_samples))
                else:  # a perfect model everywhere: nothing to prefer, fall back to E = 1
                    positions = self._balanced(counts, offsets)
        shape = tuple(d[self.label_key].shape[1:])
        d[self.centres_key] = np.stack(np.unravel_index(order[positions], shape), axis=1).astype(np.int64)
        d[self.classes_key] = (np.searchsorted(offsets, positions, side="right") - 1).astype(np.int64)
        return d


def accepted_mass(error: np.ndarray, label: np.ndarray) -> float:
    """``a = (1/K) sum_k mean_{c in k} E(c)`` over the K classes present: the acceptance probability of one try of
    Algorithm 2's inner loop on this image (given the image)."""
    label = np.asarray(label).reshape(-1).astype(np.int64)
    counts = np.bincount(label)
    sums = np.bincount(label, weights=np.asarray(error, dtype=np.float64).reshape(-1), minlength=len(counts))
    present = counts > 0
    return float(np.mean(sums[present] / counts[present]))


class ErrorWeightedImageSampler(WeightedRandomSampler):
    """Algorithm 2, line 4, with the rejections folded in: image ``i`` is drawn with probability proportional to
    its accepted mass ``a_i`` (``ErrorMapStore.accepted_mass``, re-read at the start of every epoch). With all
    error maps equal to 1 every ``a_i`` is 1: uniform image choice. ``torch``'s ``WeightedRandomSampler`` with
    weights refreshed per epoch."""

    def __init__(self, store: ErrorMapStore, num_samples: int, generator: torch.Generator | None = None) -> None:
        super().__init__([1.0] * store.num_cases, num_samples, replacement=True, generator=generator)
        self.store = store

    def __iter__(self):
        masses = torch.as_tensor(self.store.accepted_mass(), dtype=torch.double)
        self.weights = masses if float(masses.sum()) > 0 else torch.ones_like(masses)
        return super().__iter__()


def algorithm2_rejection(
    errors: list[np.ndarray], labels: list[np.ndarray], num_draws: int, rng: np.random.Generator
) -> np.ndarray:
    """The paper's literal Algorithm 2 loop over images, classes and voxels: ``(num_draws, 3)`` rows of
    (image, class, flat voxel index). The reference the exact samplers are tested and benchmarked against."""
    flats = [np.asarray(label).reshape(-1) for label in labels]
    classes = [np.unique(flat) for flat in flats]
    members = [{int(k): np.flatnonzero(flat == k) for k in ks} for flat, ks in zip(flats, classes)]
    out = []
    while len(out) < num_draws:
        i = int(rng.integers(len(labels)))
        k = int(classes[i][rng.integers(len(classes[i]))])
        voxel = int(members[i][k][rng.integers(len(members[i][k]))])
        if errors[i].reshape(-1)[voxel] > rng.random():
            out.append((i, k, voxel))
    return np.asarray(out, dtype=np.int64)
