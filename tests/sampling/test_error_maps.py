import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from autolr_monai.sampling import ErrorMapStore, RandErrorWeightedCentresd, accepted_mass
from tests.sampling.conftest import SHAPE, make_item


def test_maps_start_at_one_and_commits_bump_versions(tmp_path):
    store = ErrorMapStore(str(tmp_path), 2)
    store.register(1, (3, 4, 5))
    assert store.map(1).dtype == np.float16 and (np.asarray(store.map(1)) == 1).all()
    assert store.version(1) == 0 and store.accepted_mass().tolist() == [1.0, 1.0]
    store.write(1, (slice(0, 1),), np.zeros((1, 4, 5), dtype=np.float16))
    store.commit(1, 0.25)
    assert store.version(1) == 1 and store.accepted_mass()[1] == 0.25
    assert np.load(tmp_path / "case_0001.npy")[0].max() == 0  # the run folder holds the maps as .npy files
    with pytest.raises(IndexError, match="outside the store's 2 cases"):
        store.map(2)
    with pytest.raises(KeyError, match="register"):
        store.map(0)


def test_resume_restores_maps_masses_and_cursor(tmp_path):
    store = ErrorMapStore(str(tmp_path / "a"), 2)
    for i in range(2):
        store.register(i, SHAPE)
    error = np.random.default_rng(0).random(SHAPE).astype(np.float16)
    store.write(1, (slice(None),) * 3, error)
    store.commit(1, 0.4)
    store.cursor = 1
    torch.save(store.state_dict(), tmp_path / "checkpoint.pt")

    resumed = ErrorMapStore(str(tmp_path / "b"), 2)  # a new process: maps re-registered at 1 while caching
    for i in range(2):
        resumed.register(i, SHAPE)
    resumed.load_state_dict(torch.load(tmp_path / "checkpoint.pt", weights_only=True))
    assert np.array_equal(np.asarray(resumed.map(1)), error) and (np.asarray(resumed.map(0)) == 1).all()
    assert resumed.accepted_mass().tolist() == [1.0, 0.4] and resumed.cursor == 1
    assert resumed.version(1) > store.version(1)  # tables built from the pre-resume maps are stale

    wrong = ErrorMapStore(str(tmp_path / "c"), 2)
    for i in range(2):
        wrong.register(i, (2, 2, 2))
    with pytest.raises(ValueError, match="checkpoint has shape"):
        wrong.load_state_dict(store.state_dict())


class _MapReader(Dataset):
    """Each item: the worker's view of case 0 (mean of the map, version) and centres drawn from it."""

    def __init__(self, store, item):
        self.store, self.item = store, item
        self.transform = RandErrorWeightedCentresd(num_samples=20, store=store)

    def __len__(self):
        return 2

    def __getitem__(self, i):
        centres = self.transform(self.item)["patch_centres"]
        return float(np.asarray(self.store.map(0), dtype=np.float64).mean()), self.store.version(0), centres


def test_update_in_main_process_is_seen_by_a_live_persistent_worker(tmp_path):
    label = np.random.default_rng(0).integers(0, 3, size=SHAPE)
    store = ErrorMapStore(str(tmp_path), 1)
    store.register(0, SHAPE)
    loader = DataLoader(_MapReader(store, make_item(label, 0)), batch_size=None, num_workers=1,
                        persistent_workers=True)  # fmt: skip
    first = list(loader)
    assert all(mean == 1.0 and version == 0 for mean, version, _ in first)
    worker_pids = loader._iterator._workers[0].pid

    only = np.zeros(SHAPE, dtype=np.float16)
    target = tuple(np.argwhere(label == 2)[0])
    only[target] = 1.0
    store.write(0, (slice(None),) * 3, only)
    store.commit(0, accepted_mass(only, label))
    second = list(loader)
    assert loader._iterator._workers[0].pid == worker_pids  # the same worker process, not restarted
    for mean, version, centres in second:
        assert mean == pytest.approx(1.0 / label.size) and version == 1
        assert {tuple(c) for c in centres.tolist()} == {target}  # its draw tables were rebuilt from the new map


def test_pickled_store_reopens_the_shared_files(tmp_path):
    store = ErrorMapStore(str(tmp_path), 1)
    store.register(0, SHAPE)
    copy = pickle.loads(pickle.dumps(store))  # what a 'spawn' worker receives
    store.write(0, (slice(0, 1),), np.zeros((1, *SHAPE[1:]), dtype=np.float16))
    store.commit(0, 0.5)
    assert float(np.asarray(copy.map(0))[0].max()) == 0.0 and copy.version(0) == 1
