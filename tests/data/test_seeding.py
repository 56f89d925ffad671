"""Per-sample seeds: a sample's random draws follow its seed, not the process or the order that cuts it."""

from __future__ import annotations

import pytest
import torch
from monai.data import Dataset
from monai.transforms import Compose, RandomizableTransform

from autolr_monai.data import SeededDataset, SeededSampler


class _Draw(RandomizableTransform):
    def __call__(self, data):
        return {**data, "draw": float(self.R.random())}


def test_the_sampler_pairs_each_index_with_a_seed_from_the_generator():
    sampler = torch.utils.data.WeightedRandomSampler([1.0, 2.0, 3.0], 5, generator=torch.Generator().manual_seed(7))
    first = list(SeededSampler(sampler, sampler.generator))
    assert len(first) == len(SeededSampler(sampler, sampler.generator)) == 5
    assert all(isinstance(i, int) and isinstance(s, int) and 0 <= s < 2**31 for i, s in first)
    sampler.generator.manual_seed(7)
    assert list(SeededSampler(sampler, sampler.generator)) == first  # the generator's state alone decides
    assert list(SeededSampler(sampler, sampler.generator)) != first  # and it advances epoch after epoch


def test_a_sample_is_a_function_of_its_seed_whatever_was_cut_before():
    dataset = SeededDataset(Dataset([{"i": 0}, {"i": 1}], transform=Compose([_Draw()])))
    alone = dataset[(1, 123)]
    dataset[(0, 5)], dataset[(1, 9)]  # other samples in between, as another worker's share would be
    assert dataset[(1, 123)] == alone and dataset[(1, 124)] != alone and len(dataset) == 2


def test_a_dataset_without_a_seedable_transform_is_refused():
    with pytest.raises(TypeError, match="needs a dataset whose transform has set_random_state"):
        SeededDataset(torch.utils.data.TensorDataset(torch.zeros(1)))
