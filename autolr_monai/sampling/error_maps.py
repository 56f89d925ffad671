"""Error maps of isample (Algorithm 2): one map ``E_i`` per training case, shared with DataLoader workers.

Each map lives in a memory-mapped ``.npy`` file (float16, on the cached preprocessed grid of its case) under the
run folder, so a map written by the main process is seen by every worker process at its next draw without
restarting the workers, and memory does not grow with the number of workers (the page cache is shared). A small
shared array of per-case versions tells workers when to rebuild what they derived from a map.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.transforms import MapTransform


class ErrorMapStore:
    """Algorithm 2's error maps ``E_i(x)``: initialised to 1 (line 1), rewritten by ``ErrorMapRefresher``.

    Also holds, for the main process, each case's *accepted mass* (the probability that one try of Algorithm 2's
    inner loop on that image is accepted, up to the common 1/N image factor), which the image sampler uses, and the
    refresh cursor. ``state_dict()`` / ``load_state_dict()`` carry maps, masses and cursor, so Ignite's
    ``Checkpoint`` saves them and a resumed run continues with the same maps.
    """

    def __init__(self, folder: str, num_cases: int) -> None:
        if num_cases < 1:
            raise ValueError(f"num_cases must be >= 1, got {num_cases}")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.num_cases = int(num_cases)
        self.cursor = 0
        self._masses = np.ones(self.num_cases)
        self._versions = np.lib.format.open_memmap(self.folder / "versions.npy", mode="w+", dtype=np.int64,
                                                   shape=(self.num_cases,))  # fmt: skip
        self._maps: dict[int, np.memmap] = {}
        self._lock = threading.Lock()

    def path(self, index: int) -> Path:
        return self.folder / f"case_{index:04d}.npy"

    def _check(self, index: int) -> int:
        if not 0 <= int(index) < self.num_cases:
            raise IndexError(f"case index {index} is outside the store's {self.num_cases} cases")
        return int(index)

    def register(self, index: int, shape: Sequence[int]) -> None:
        """Create the map of case ``index`` with every voxel 1 (a fresh run starts from E = 1)."""
        index = self._check(index)
        array = np.lib.format.open_memmap(self.path(index), mode="w+", dtype=np.float16, shape=tuple(shape))
        array[...] = 1.0
        with self._lock:
            self._maps[index] = array
            self._versions[index] = 0
            self._masses[index] = 1.0

    def map(self, index: int) -> np.ndarray:
        """The live (memory-mapped) map of a case; reading it in a worker sees the main process's last write."""
        index = self._check(index)
        if index not in self._maps:  # a worker started by 'spawn' reopens the files
            if not self.path(index).is_file():
                raise KeyError(f"no error map for case {index} in {self.folder}: register() it first")
            self._maps[index] = np.load(self.path(index), mmap_mode="r+")
        return self._maps[index]

    def version(self, index: int) -> int:
        """0 while the map is still all ones; incremented by every ``commit``."""
        return int(self._versions[self._check(index)])

    def write(self, index: int, region: tuple[slice, ...], values: np.ndarray) -> None:
        self.map(index)[region] = values

    def commit(self, index: int, accepted_mass: float) -> None:
        """Publish a rewritten map: workers rebuild their sampling tables at the new version."""
        index = self._check(index)
        self.map(index).flush()
        self._masses[index] = accepted_mass
        self._versions[index] += 1

    def accepted_mass(self) -> np.ndarray:
        return self._masses.copy()

    def state_dict(self) -> dict:
        indices = sorted(self._maps) if self._maps else []
        return {
            "indices": torch.tensor(indices, dtype=torch.int64),
            "maps": [torch.from_numpy(np.array(self.map(i))) for i in indices],
            "versions": torch.from_numpy(np.array(self._versions)),
            "masses": torch.from_numpy(self._masses.copy()),
            "cursor": self.cursor,
        }

    def load_state_dict(self, state: Mapping) -> None:
        for index, saved in zip(state["indices"].tolist(), state["maps"]):
            live = self.map(index)
            if tuple(live.shape) != tuple(saved.shape):
                raise ValueError(f"error map of case {index}: checkpoint has shape {tuple(saved.shape)}, the cached "
                                 f"case has {tuple(live.shape)}: was it saved for another dataset or spacing?")  # fmt: skip
            live[...] = saved.numpy()
            live.flush()
        self._masses[:] = state["masses"].numpy()
        # bump every version past both counters: tables built from the old maps are stale
        self._versions[:] = np.maximum(np.array(self._versions), state["versions"].numpy()) + 1
        self.cursor = int(state["cursor"])

    def load_resume_state(self, state: Mapping) -> None:
        """``load_state_dict`` for resuming from a checkpoint in a fresh process: a map saved at version 0 (all
        ones; the sampler then draws class-balanced without a table) stays at 0, so a run resumed before its first
        refresh draws exactly as the uninterrupted one did. Swaps keep bumping every version."""
        self.load_state_dict(state)
        saved = state["versions"].numpy()
        self._versions[:] = np.where(saved == 0, 0, np.array(self._versions))

    def __getstate__(self) -> dict:
        """Pickled for 'spawn' workers: reopen the shared files instead of copying arrays."""
        state = self.__dict__.copy()
        state["_maps"], state["_lock"] = {}, None
        state["_versions"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._versions = np.load(self.folder / "versions.npy", mmap_mode="r+")


class InitErrorMapd(MapTransform):
    """Create each case's error map ``E_i = 1`` on its cached grid (Algorithm 2, line 1); runs once per case in the
    cached part of the training pipeline, reading the case index written by ``load_datalist``."""

    def __init__(self, store: ErrorMapStore, label_key: str = "label", index_key: str = "case_index") -> None:
        super().__init__([label_key])
        self.store, self.label_key, self.index_key = store, label_key, index_key

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        if self.index_key not in d:
            raise KeyError(f"isample needs the case index {self.index_key!r} in each item (load_datalist adds it)")
        self.store.register(int(d[self.index_key]), d[self.label_key].shape[1:])
        return d
