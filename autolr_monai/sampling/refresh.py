"""Ignite handlers of isample: refresh the error maps during training (Algorithm 2, lines 10-13) and show them."""

from __future__ import annotations

import logging
import time
from contextlib import nullcontext

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.transforms import Randomizable

from .error_maps import ErrorMapStore
from .isample import accepted_mass

logger = logging.getLogger("autolr_monai.isample")


def cached_item(dataset, index: int) -> dict:
    """The deterministic (cached) part of a training item: from MONAI ``CacheDataset``'s cache, which has no public
    accessor, else by running the transforms up to the first random one."""
    cache = getattr(dataset, "_cache", None)
    if cache is not None and index < len(cache) and isinstance(cache[index], dict):
        return cache[index]
    first_random = dataset.transform.get_index_of_first(lambda t: isinstance(t, Randomizable))
    return dataset.transform(dataset.data[index], end=first_random)


class ErrorMapRefresher:
    """Every ``update_every`` epochs, rewrite the error maps of the next ``n_cases`` training cases (cycling, so each
    case is refreshed in turn) as ``E = 1 - p(true class)`` (equation 7), from whole-volume inference with the
    current weights: ``inferer`` (the exact tiled inferer with ``output="probabilities"``), eval mode, no gradients,
    autocast on CUDA when ``amp``. Each tile is reduced to its error right away, so no whole-volume probability
    map is held. Logs the time taken and the mean error per case, and puts their mean in
    ``engine.state.metrics["isample_mean_error"]``.
    """

    def __init__(
        self,
        store: ErrorMapStore,
        dataset,
        network: torch.nn.Module,
        inferer,
        update_every: int = 1,
        n_cases: int = 1,
        amp: bool = False,
        image_key: str = "image",
        label_key: str = "label",
    ) -> None:
        if update_every < 1 or n_cases < 1:
            raise ValueError(f"update_every and n_cases must be >= 1, got {update_every} and {n_cases}")
        self.store, self.dataset, self.network, self.inferer = store, dataset, network, inferer
        self.update_every, self.n_cases, self.amp = update_every, min(n_cases, store.num_cases), amp
        self.image_key, self.label_key = image_key, label_key
        self.last_refresh: dict[int, float] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.update_every), self)

    def next_cases(self) -> list[int]:
        cases = [(self.store.cursor + i) % self.store.num_cases for i in range(self.n_cases)]
        self.store.cursor = (self.store.cursor + self.n_cases) % self.store.num_cases
        return cases

    @torch.no_grad()
    def refresh(self, index: int) -> float:
        """Rewrite the map of one case; returns its mean error."""
        item = cached_item(self.dataset, index)
        device = next(self.network.parameters()).device
        image = torch.as_tensor(item[self.image_key])[None].to(device)
        label = torch.as_tensor(item[self.label_key])[0].to(device).long()
        autocast = torch.autocast("cuda") if self.amp and device.type == "cuda" else nullcontext()
        with autocast:
            for region, probabilities in self.inferer.iter_tiles(image, self.network):
                true = probabilities[0].float().gather(0, label[region][None])[0]
                self.store.write(index, region, (1.0 - true).clamp_(0.0, 1.0).half().cpu().numpy())
        error = self.store.map(index)
        self.store.commit(index, accepted_mass(error, item[self.label_key]))
        return float(np.mean(error, dtype=np.float64))

    def __call__(self, engine: Engine) -> None:
        training = self.network.training
        self.network.eval()
        start = time.perf_counter()
        means = {}
        try:
            for index in self.next_cases():
                means[index] = self.refresh(index)
        finally:
            self.network.train(training)
        self.last_refresh = means
        engine.state.metrics["isample_mean_error"] = float(np.mean(list(means.values())))
        logger.info("isample: refreshed error maps in %.1f s, mean error per case: %s", time.perf_counter() - start,
                    ", ".join(f"{i}: {m:.4f}" for i, m in means.items()))  # fmt: skip


class ISampleTensorBoard:
    """TensorBoard view of isample: every ``every`` epochs, a slice of one case's image, label and current error
    map, and the histogram of the classes of the patch centres drawn since the last view."""

    def __init__(
        self,
        store: ErrorMapStore,
        dataset,
        log_dir: str,
        every: int = 5,
        case: int = 0,
        num_classes: int = 21,
        classes_key: str = "patch_classes",
        image_key: str = "image",
        label_key: str = "label",
    ) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.store, self.dataset, self.every, self.case, self.num_classes = store, dataset, every, case, num_classes
        self.classes_key, self.image_key, self.label_key = classes_key, image_key, label_key
        self.writer = SummaryWriter(log_dir=log_dir)
        self._classes: list[np.ndarray] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.every), self._write)

    def _collect(self, engine: Engine) -> None:
        batch = engine.state.batch
        if isinstance(batch, dict) and self.classes_key in batch:
            self._classes.append(np.asarray(batch[self.classes_key]).reshape(-1))

    def slices(self) -> dict[str, np.ndarray]:
        """Axial slices through the middle of the case: image (scaled to [0, 1]), label / classes, error map."""
        item = cached_item(self.dataset, self.case)
        z = item[self.label_key].shape[-1] // 2
        image = np.asarray(item[self.image_key][0, :, :, z], dtype=np.float32)
        span = float(image.max() - image.min()) or 1.0
        return {
            "image": (image - image.min()) / span,
            "label": np.asarray(item[self.label_key][0, :, :, z], dtype=np.float32) / max(self.num_classes - 1, 1),
            "error_map": np.asarray(self.store.map(self.case)[:, :, z], dtype=np.float32),
        }

    def _write(self, engine: Engine) -> None:
        epoch = engine.state.epoch
        for name, array in self.slices().items():
            self.writer.add_image(f"isample/{name}", np.flipud(array.T).copy(), epoch, dataformats="HW")
        if self._classes:
            classes = np.concatenate(self._classes)
            self.writer.add_histogram("isample/sampled_classes", classes, epoch, bins=np.arange(self.num_classes + 1) - 0.5)
            self._classes = []
        self.writer.flush()

