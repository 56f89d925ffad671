import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from autolr_monai.data import ClassIndexd
from autolr_monai.sampling import ErrorMapStore, accepted_mass

SHAPE = (6, 5, 4)


def make_item(label: np.ndarray, index: int, num_classes: int = 8) -> dict:
    d = ClassIndexd(num_classes=num_classes)({"label": MetaTensor(torch.as_tensor(label[None], dtype=torch.float32))})
    d["case_index"] = index
    return d


@pytest.fixture
def cases(tmp_path):
    """Three small label maps with 3, 4 and 5 classes of different sizes and fixed random error maps in a store."""
    rng = np.random.default_rng(0)
    labels, errors = [], []
    for i in range(3):
        label = rng.choice(3 + i, size=SHAPE, p=np.r_[0.5, np.full(2 + i, 0.5 / (2 + i))])
        labels.append(label)
        errors.append((rng.random(SHAPE) ** 2 * (0.2, 0.6, 1.0)[i]).astype(np.float16))  # images differ in mass
    store = ErrorMapStore(str(tmp_path / "maps"), 3)
    items = []
    for i in range(3):
        store.register(i, SHAPE)
        store.write(i, (slice(None),) * 3, errors[i])
        store.commit(i, accepted_mass(errors[i], labels[i]))
        items.append(make_item(labels[i], i))
    return store, labels, [np.asarray(e) for e in errors], items
