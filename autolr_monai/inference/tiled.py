"""Exact whole-volume inference for valid-convolution networks: every output voxel is computed once.

MONAI's ``SlidingWindowInferer`` runs a same-size-in/same-size-out network on overlapping windows and blends
them; a valid-convolution network instead needs each output tile's input to carry the receptive-field margin,
and then tiles need no overlap and no blending: the tiled result equals one forward pass over the whole volume.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.inferers import Inferer

OUTPUTS = ("logits", "probabilities", "labels")


class ExactTiledInferer(Inferer):
    """Tile the output grid into ``tile_size`` blocks and run ``network`` on each block plus its input margin.

    Args:
        tile_size: largest output tile extent per axis; a multiple of ``alignment`` so that every tile sees the
            same low-resolution grid as a whole-volume pass (the dual-path network's ``downsample``). Per volume,
            each axis is split into ``ceil(extent / tile_size)`` equal tiles (rounded up to ``alignment``), which
            keeps the padding beyond the volume small.
        margin: per-side input margin; default: ``network.input_margin``.
        alignment: required multiple for ``tile_size``; default: ``network.downsample`` (1 if absent).
        tiles_per_batch: tiles stacked into one forward pass.
        output: ``"logits"``, ``"probabilities"`` (softmax over channels) or ``"labels"`` (argmax, uint8; the
            cheapest in memory, 1 byte per voxel instead of 4 per class).
        device: where the output volume is assembled (default: the input's device); tiles run on the network's.
        progress: show a progress bar over tiles.

    The volume is padded by edge replication (the training pipeline replicates edges too).
    """

    def __init__(
        self,
        tile_size: int | Sequence[int] = 64,
        margin: int | None = None,
        alignment: int | None = None,
        tiles_per_batch: int = 1,
        output: str = "logits",
        device: torch.device | str | None = None,
        progress: bool = False,
    ) -> None:
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        if tiles_per_batch < 1:
            raise ValueError(f"tiles_per_batch must be >= 1, got {tiles_per_batch}")
        self.tile_size = tuple(tile_size) if isinstance(tile_size, Sequence) else (int(tile_size),) * 3
        self.margin, self.alignment, self.tiles_per_batch = margin, alignment, tiles_per_batch
        self.output, self.device, self.progress = output, device, progress

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args, **kwargs) -> torch.Tensor:
        """Whole-volume output ``(B, C, X, Y, Z)`` (``C = 1`` for ``output="labels"``)."""
        out_device = self.device or inputs.device
        result: torch.Tensor | None = None
        for region, pred in self.iter_tiles(inputs, network, *args, **kwargs):
            if result is None:
                shape = (inputs.shape[0], pred.shape[1], *inputs.shape[2:])
                result = torch.empty(shape, dtype=pred.dtype, device=out_device)
            result[(slice(None), slice(None), *region)] = pred.to(out_device)
        assert result is not None
        return result

    def iter_tiles(
        self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args, **kwargs
    ) -> Iterator[tuple[tuple[slice, ...], torch.Tensor]]:
        """Yield ``(region, prediction)`` per output tile: ``region`` indexes the spatial axes of ``inputs`` (tiles
        are cropped at the volume's far edges), ``prediction`` is ``(B, C, *region extent)`` on the network's
        device. Lets a caller reduce each tile (for example to an error map) without holding the whole output."""
        margin = self.margin if self.margin is not None else int(getattr(network, "input_margin"))
        alignment = self.alignment if self.alignment is not None else int(getattr(network, "downsample", 1))
        if any(t < 1 or t % alignment for t in self.tile_size):
            raise ValueError(f"tile_size {self.tile_size} must be positive multiples of {alignment}")
        if inputs.ndim != 5:
            raise ValueError(f"expected a batch of 3D volumes (B, C, X, Y, Z), got shape {tuple(inputs.shape)}")
        inputs = inputs.as_tensor() if isinstance(inputs, MetaTensor) else torch.as_tensor(inputs)  # no meta per tile
        shape = inputs.shape[2:]
        counts = [math.ceil(s / t) for s, t in zip(shape, self.tile_size)]
        tiles = [alignment * math.ceil(math.ceil(s / n) / alignment) for s, n in zip(shape, counts)]
        pad = []
        for s, t, n in zip(reversed(shape), reversed(tiles), reversed(counts)):
            pad += [margin, margin + n * t - s]
        padded = F.pad(inputs, pad, mode="replicate")
        origins = list(itertools.product(*[range(0, n * t, t) for n, t in zip(counts, tiles)]))
        bar = _progress(len(origins)) if self.progress else None
        b = inputs.shape[0]
        for start in range(0, len(origins), self.tiles_per_batch):
            batch_origins = origins[start : start + self.tiles_per_batch]
            batch = torch.cat([self._input_tile(padded, o, tiles, margin) for o in batch_origins], dim=0)
            pred = self._finish(network(batch, *args, **kwargs))
            for i, origin in enumerate(batch_origins):
                region = tuple(slice(o, min(o + t, s)) for o, t, s in zip(origin, tiles, shape))
                extent = tuple(r.stop - r.start for r in region)
                yield region, pred[i * b : (i + 1) * b, :, : extent[0], : extent[1], : extent[2]]
            if bar is not None:
                bar.update(len(batch_origins))
        if bar is not None:
            bar.close()

    @staticmethod
    def _input_tile(padded: torch.Tensor, origin: Sequence[int], tiles: Sequence[int], margin: int) -> torch.Tensor:
        region = tuple(slice(o, o + t + 2 * margin) for o, t in zip(origin, tiles))
        return padded[(slice(None), slice(None), *region)]

    def _finish(self, logits: torch.Tensor) -> torch.Tensor:
        if self.output == "probabilities":
            return torch.softmax(logits.float(), dim=1)
        if self.output == "labels":
            return logits.argmax(dim=1, keepdim=True).to(torch.uint8)
        return logits


def _progress(total: int):
    from tqdm import tqdm

    return tqdm(total=total, desc="tiles", leave=False)
