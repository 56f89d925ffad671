import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.data import CacheDataset, MetaTensor
from monai.transforms import Compose
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from autolr_monai.data import ClassIndexd
from autolr_monai.inference import ExactTiledInferer
from autolr_monai.networks import DualPathResNet3D
from autolr_monai.sampling import (
    ErrorMapRefresher,
    ErrorMapStore,
    InitErrorMapd,
    ISampleTensorBoard,
    RandErrorWeightedCentresd,
    accepted_mass,
)
from tests.conftest import TINY_NETWORK


@pytest.fixture
def setup(tmp_path):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    store = ErrorMapStore(str(tmp_path / "maps"), 3)
    items = [
        {"image": MetaTensor(torch.randn(1, 9, 10, 11)), "label": MetaTensor(torch.as_tensor(rng.integers(0, 4, (1, 9, 10, 11)))),
         "case_index": i}
        for i in range(3)
    ]  # fmt: skip
    transform = Compose([ClassIndexd(num_classes=21), InitErrorMapd(store), RandErrorWeightedCentresd(store=store)])
    dataset = CacheDataset(items, transform, cache_rate=1.0, copy_cache=False, progress=False)
    network = DualPathResNet3D(**TINY_NETWORK).train()
    inferer = ExactTiledInferer(tile_size=8, output="probabilities")
    return store, dataset, network, inferer, items


def test_refresh_writes_one_minus_true_class_probability_and_cycles(setup):
    store, dataset, network, inferer, items = setup
    refresher = ErrorMapRefresher(store, dataset, network, inferer, update_every=1, n_cases=2)
    engine = Engine(lambda e, b: None)
    refresher(engine)
    assert network.training  # restored after inference in eval mode
    assert sorted(refresher.last_refresh) == [0, 1] and store.cursor == 2
    network.eval()
    with torch.no_grad():
        probabilities = ExactTiledInferer(tile_size=12, output="probabilities")(items[0]["image"][None], network)
    true = probabilities[0].gather(0, items[0]["label"].as_tensor().long())[0].numpy()
    assert np.allclose(np.asarray(store.map(0), dtype=np.float32), 1.0 - true, atol=2e-3)  # float16 storage
    assert store.version(0) == 1 and store.version(2) == 0
    assert store.accepted_mass()[0] == pytest.approx(accepted_mass(store.map(0), items[0]["label"]))
    assert engine.state.metrics["isample_mean_error"] == pytest.approx(np.mean(list(refresher.last_refresh.values())))
    refresher(engine)
    assert sorted(refresher.last_refresh) == [0, 2] and store.version(2) == 1 and store.version(0) == 2


def test_refresher_runs_every_update_every_epochs(setup):
    store, dataset, network, inferer, _ = setup
    engine = Engine(lambda e, b: None)
    ErrorMapRefresher(store, dataset, network, inferer, update_every=2, n_cases=1).attach(engine)
    engine.run([0], max_epochs=4)
    assert [store.version(i) for i in range(3)] == [1, 1, 0]


def test_tensorboard_shows_maps_and_sampled_classes(setup, tmp_path):
    store, dataset, network, inferer, _ = setup
    ErrorMapRefresher(store, dataset, network, inferer, n_cases=3)(Engine(lambda e, b: None))
    engine = Engine(lambda e, b: None)
    board = ISampleTensorBoard(store, dataset, str(tmp_path / "tb"), every=1)
    board.attach(engine)
    engine.run([{"patch_classes": torch.tensor([1, 2, 2])}] * 2, max_epochs=1)
    events = EventAccumulator(str(tmp_path / "tb")).Reload()
    assert {"isample/image", "isample/label", "isample/error_map"} <= set(events.Tags()["images"])
    assert "isample/sampled_classes" in events.Tags()["histograms"]
    histogram = events.Histograms("isample/sampled_classes")[0].histogram_value
    assert histogram.num == 6
    slices = board.slices()
    assert np.allclose(slices["error_map"], np.asarray(store.map(0))[:, :, 5].astype(np.float32))


def test_invalid_refresh_settings(setup):
    store, dataset, network, inferer, _ = setup
    with pytest.raises(ValueError, match="update_every and n_cases must be >= 1"):
        ErrorMapRefresher(store, dataset, network, inferer, update_every=0)
