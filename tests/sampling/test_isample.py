"""isample's exact samplers against the paper's literal Algorithm 2 loop."""

import numpy as np
import pytest
import torch
from scipy.stats import chi2_contingency, chisquare

from autolr_monai.sampling import (
    ErrorMapStore,
    ErrorWeightedImageSampler,
    RandErrorWeightedCentresd,
    accepted_mass,
    algorithm2_rejection,
)
from tests.sampling.conftest import SHAPE, make_item

ALPHA = 0.001  # significance of the distribution tests: a correct sampler fails one of them 0.1% of the time
DRAWS = 40_000


def _exact_draws(store, items, n, seed=0, mode="exact") -> np.ndarray:
    """Algorithm 2 as the training pipeline runs it: image from the sampler, then (class, voxel) in that image."""
    sampler = ErrorWeightedImageSampler(store, n, generator=torch.Generator().manual_seed(seed))
    transform = RandErrorWeightedCentresd(num_samples=1, store=store, mode=mode)
    transform.set_random_state(seed)
    rows = []
    for i in sampler:
        d = transform(items[i])
        rows.append((i, int(d["patch_classes"][0]), int(np.ravel_multi_index(d["patch_centres"][0], SHAPE))))
    return np.asarray(rows)


def _homogeneity_pvalue(a: np.ndarray, b: np.ndarray) -> float:
    """Chi-square test that two samples of (image, class, voxel) rows come from one distribution."""
    cells_a = a[:, 0] * 10_000 + a[:, 1] * 1_000 + a[:, 2] // 1  # one cell per (image, voxel); class follows voxel
    cells_b = b[:, 0] * 10_000 + b[:, 1] * 1_000 + b[:, 2] // 1
    keys = np.union1d(cells_a, cells_b)
    table = np.stack([np.searchsorted(keys, cells_a, side="left"), np.searchsorted(keys, cells_b, side="left")])
    counts = np.stack([np.bincount(table[0], minlength=len(keys)), np.bincount(table[1], minlength=len(keys))])
    return float(chi2_contingency(counts).pvalue)


def test_exact_sampler_matches_the_literal_algorithm_2(cases):
    store, labels, errors, items = cases
    reference = algorithm2_rejection(errors, labels, DRAWS, np.random.default_rng(1))
    exact = _exact_draws(store, items, DRAWS)
    assert all(labels[i].reshape(-1)[v] == k for i, k, v in exact)
    assert _homogeneity_pvalue(reference, exact) > ALPHA


def test_rejection_mode_matches_the_literal_algorithm_2(cases):
    store, labels, errors, items = cases
    reference = algorithm2_rejection(errors, labels, DRAWS // 2, np.random.default_rng(2))
    assert _homogeneity_pvalue(reference, _exact_draws(store, items, DRAWS // 2, seed=3, mode="rejection")) > ALPHA


def test_a_wrong_sampler_fails_the_test(cases):
    """Uniform image choice (forgetting that rejections re-draw the image) is detectably wrong."""
    store, labels, errors, items = cases
    reference = algorithm2_rejection(errors, labels, DRAWS, np.random.default_rng(1))
    wrong = ErrorMapStore(str(store.folder.parent / "wrong"), 3)
    for i in range(3):
        wrong.register(i, SHAPE)
        wrong.write(i, (slice(None),) * 3, errors[i])
        wrong.commit(i, 1.0)  # image masses all equal
    assert _homogeneity_pvalue(reference, _exact_draws(wrong, items, DRAWS)) < 1e-6


def test_a_sampler_ignoring_class_sizes_fails_the_test(cases):
    """Voxels drawn in proportion to E alone (RandWeightedCropd on E) over-sample large classes."""
    store, labels, errors, items = cases
    reference = algorithm2_rejection(errors, labels, DRAWS, np.random.default_rng(1))
    rng = np.random.default_rng(4)
    masses = np.array([accepted_mass(e, lab) for e, lab in zip(errors, labels)])
    rows = []
    for i in rng.choice(3, size=DRAWS, p=masses / masses.sum()):
        weights = errors[i].reshape(-1).astype(np.float64)
        voxel = int(rng.choice(weights.size, p=weights / weights.sum()))
        rows.append((i, int(labels[i].reshape(-1)[voxel]), voxel))
    assert _homogeneity_pvalue(reference, np.asarray(rows)) < 1e-6


def test_without_error_maps_sampling_is_class_balanced():
    label = np.zeros(SHAPE, dtype=np.int64)
    label[1:4, 1:4, 1:3] = 1
    label[5, 4, 3] = 2
    item = make_item(label, 0, num_classes=4)
    t = RandErrorWeightedCentresd(num_samples=3000)
    t.set_random_state(0)
    d = t(item)
    centres, classes = d["patch_centres"], d["patch_classes"]
    assert (label[tuple(centres.T)] == classes).all()
    counts = np.bincount(classes, minlength=4)
    assert counts[3] == 0 and chisquare(counts[:3]).pvalue > ALPHA
    assert (centres[classes == 2] == [5, 4, 3]).all()
    block = np.ravel_multi_index(tuple(centres[classes == 1].T), SHAPE)
    assert chisquare(np.unique(block, return_counts=True)[1]).pvalue > ALPHA  # uniform within the class


def test_unrefreshed_maps_sample_like_no_maps(tmp_path):
    label = np.random.default_rng(0).integers(0, 3, size=SHAPE)
    store = ErrorMapStore(str(tmp_path), 1)
    store.register(0, SHAPE)
    with_store = RandErrorWeightedCentresd(num_samples=50, store=store)
    without = RandErrorWeightedCentresd(num_samples=50)
    with_store.set_random_state(5)
    without.set_random_state(5)
    item = make_item(label, 0)
    assert np.array_equal(with_store(item)["patch_centres"], without(item)["patch_centres"])


def test_zero_error_voxels_are_never_drawn_and_tables_follow_map_updates(cases):
    store, labels, errors, items = cases
    t = RandErrorWeightedCentresd(num_samples=500, store=store)
    t.set_random_state(0)
    t(items[0])
    only = np.zeros(SHAPE, dtype=np.float16)
    wanted = [np.argwhere(labels[0] == k)[0] for k in range(3)]
    for v in wanted:
        only[tuple(v)] = 0.5
    store.write(0, (slice(None),) * 3, only)
    store.commit(0, accepted_mass(only, labels[0]))
    drawn = {tuple(c) for c in t(items[0])["patch_centres"]}
    assert drawn == {tuple(v) for v in wanted}


def test_image_sampler_follows_accepted_mass(tmp_path):
    store = ErrorMapStore(str(tmp_path), 3)
    sampler = ErrorWeightedImageSampler(store, 30_000, generator=torch.Generator().manual_seed(0))
    assert chisquare(np.bincount(list(sampler), minlength=3)).pvalue > ALPHA  # all ones: uniform
    for i, mass in enumerate([0.1, 0.3, 0.6]):
        store.register(i, (2, 2, 2))
        store.commit(i, mass)
    counts = np.bincount(list(sampler), minlength=3)
    assert chisquare(counts, np.array([0.1, 0.3, 0.6]) * 30_000).pvalue > ALPHA
    for i in range(3):
        store.commit(i, 0.0)
    assert chisquare(np.bincount(list(sampler), minlength=3)).pvalue > ALPHA  # nothing left to learn: uniform


def test_accepted_mass_is_the_mean_over_classes_of_the_class_mean_error():
    label = np.array([0, 0, 0, 1, 2, 2])
    error = np.array([0.0, 0.3, 0.6, 1.0, 0.2, 0.4])
    assert accepted_mass(error, label) == pytest.approx((0.3 + 1.0 + 0.3) / 3)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="num_samples"):
        RandErrorWeightedCentresd(num_samples=0)
    with pytest.raises(ValueError, match="mode"):
        RandErrorWeightedCentresd(mode="metropolis")
