"""Per-sample random streams: a training epoch that does not depend on its DataLoader workers.

PyTorch seeds each worker process once, so a transform's random draws depend on which worker cut which batch, how
many workers there are and, after a resume, on a freshly seeded worker. Here the sampler draws one seed per sample
from the run's generator (whose state the checkpoints hold) together with the sample's index, and the dataset
reseeds its random transforms from it before cutting the sample, in whatever process that happens. MONAI's
``DataLoader`` seeds workers, not samples, hence these two small wrappers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized

import torch
from torch.utils.data import Dataset, Sampler

MAX_SEED = 2**31 - 1


class SeededSampler(Sampler):
    """``(index, seed)`` for every index of ``sampler``; the seeds are drawn from ``generator`` right after the
    sampler's own draws of the epoch, so both follow the generator's state alone.

    Args:
        sampler: the epoch's image choice (Algorithm 2, line 4: ``ErrorWeightedImageSampler``).
        generator: the run's generator, shared with ``sampler``.
    """

    def __init__(self, sampler: Sampler, generator: torch.Generator) -> None:
        self.sampler, self.generator = sampler, generator

    def __len__(self) -> int:
        if not isinstance(self.sampler, Sized):
            raise TypeError(f"{type(self.sampler).__name__} has no length")
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = [int(i) for i in self.sampler]
        seeds = torch.randint(0, MAX_SEED, (len(indices),), generator=self.generator).tolist()
        return iter(zip(indices, seeds))


class SeededDataset(Dataset):
    """``dataset[index]`` cut with ``dataset.transform.set_random_state(seed)`` for each ``(index, seed)`` item of a
    ``SeededSampler``: the sample's patch centres, rotations and jitter are a function of its seed alone.

    Args:
        dataset: a MONAI dataset whose ``transform`` (a ``Compose``) holds the random steps.
    """

    def __init__(self, dataset: Dataset) -> None:
        transform = getattr(dataset, "transform", None)
        if not hasattr(transform, "set_random_state"):
            raise TypeError(f"SeededDataset needs a dataset whose transform has set_random_state (a MONAI Compose), "
                            f"got {type(transform).__name__}")  # fmt: skip
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        self.dataset.transform.set_random_state(seed=int(seed))
        return self.dataset[int(index)]
