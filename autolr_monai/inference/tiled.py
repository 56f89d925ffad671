"""Exact whole-volume inference for valid-convolution networks: every output voxel is computed once.

MONAI's ``SlidingWindowInferer`` runs a same-size-in/same-size-out network on overlapping windows and blends
them; a valid-convolution network instead needs each output tile's input to carry the receptive-field margin,
and then tiles need no overlap and no blending: the tiled result equals one forward pass over the whole volume.

A two-resolution network (``DualPathResNet3D``) would recompute its low-resolution path on every tile's wide
margin (15 low-resolution voxels, 60 full-resolution ones, per side); here that path runs once over the whole
volume at its own resolution, in blocks, and each tile takes its block of the features.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.utils import convert_to_dst_type

OUTPUTS = ("logits", "probabilities", "labels")


class ExactTiledInferer(Inferer):
    """Tile the output grid into ``tile_size`` blocks and run ``network`` on each block plus its input margin.

    Args:
        tile_size: largest output tile extent per axis; a multiple of ``alignment`` so that every tile sees the
            same low-resolution grid as a whole-volume pass (the dual-path network's ``downsample``). Per volume,
            each axis is split into ``ceil(extent / tile_size)`` equal tiles (rounded up to ``alignment``), which
            keeps the padding beyond the volume small.
        margin: per-side input margin, the network's per-side loss of voxels (default: ``network.input_margin``);
            a tile output of another size than the tile raises ``ValueError``.
        alignment: required multiple for ``tile_size``; default: ``network.downsample`` (1 if absent).
        tiles_per_batch: tiles stacked into one forward pass.
        output: ``"logits"``, ``"probabilities"`` (softmax over channels) or ``"labels"`` (argmax, uint8; the
            cheapest in memory, 1 byte per voxel instead of 4 per class).
        device: where the output volume is assembled (default: the input's device); tiles run on the input's.
        progress: show a progress bar over tiles.
        channels_last: feed the network channels-last (``torch.channels_last_3d``) tensors; with its weights in that
            layout too (``load_model(channels_last=True)``) oneDNN ran the dual-path network's full-resolution path
            1.7 times faster on the development CPU.
        low_tile_size: block extent, in low-resolution voxels, for the low path of a two-resolution network.

    The volume is padded by edge replication (the training pipeline replicates edges too). A network with
    ``low_resolution_input(x)``, ``forward_with_low_features(x, low)``, a ``low`` path module, ``low_margin`` and
    ``downsample`` (``DualPathResNet3D``) runs its low path once per volume, unless extra arguments are passed to
    the network.
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
        channels_last: bool = False,
        low_tile_size: int = 48,
    ) -> None:
        super().__init__()
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        if tiles_per_batch < 1 or low_tile_size < 1:
            raise ValueError(f"tiles_per_batch and low_tile_size must be >= 1, got {tiles_per_batch}, {low_tile_size}")
        self.tile_size = tuple(tile_size) if isinstance(tile_size, Sequence) else (int(tile_size),) * 3
        self.margin, self.alignment, self.tiles_per_batch = margin, alignment, tiles_per_batch
        self.output, self.device, self.progress = output, device, progress
        self.memory_format = torch.channels_last_3d if channels_last else torch.contiguous_format
        self.low_tile_size = low_tile_size

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args, **kwargs) -> torch.Tensor:
        """Whole-volume output ``(B, C, X, Y, Z)`` (``C = 1`` for ``output="labels"``); a ``MetaTensor`` with the
        input's metadata when the input is one, as MONAI's inferers return (``Invertd`` needs it)."""
        out_device = self.device or inputs.device
        result: torch.Tensor | None = None
        for region, pred in self.iter_tiles(inputs, network, *args, **kwargs):
            if result is None:
                shape = (inputs.shape[0], pred.shape[1], *inputs.shape[2:])
                result = torch.empty(shape, dtype=pred.dtype, device=out_device)
            result[(slice(None), slice(None), *region)] = pred.to(out_device)
        assert result is not None
        if isinstance(inputs, MetaTensor):
            return convert_to_dst_type(result, inputs, dtype=result.dtype, device=result.device)[0]
        return result

    def iter_tiles(
        self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args, **kwargs
    ) -> Iterator[tuple[tuple[slice, ...], torch.Tensor]]:
        """Yield ``(region, prediction)`` per output tile: ``region`` indexes the spatial axes of ``inputs`` (tiles
        are cropped at the volume's far edges), ``prediction`` is ``(B, C, *region extent)`` on the device the
        network computes on (that of ``inputs``). Lets a caller reduce each tile (for example to an error map) without
        holding the whole output."""
        margin = self.margin if self.margin is not None else int(getattr(network, "input_margin"))
        downsample = int(getattr(network, "downsample", 1))
        alignment = self.alignment if self.alignment is not None else downsample
        if alignment % downsample:
            raise ValueError(f"alignment {alignment} must be a multiple of the network's downsample {downsample}: "
                             "tiles must see the low-resolution grid of a whole-volume pass")  # fmt: skip
        if len(self.tile_size) != 3 or any(t < 1 or t % alignment for t in self.tile_size):
            raise ValueError(f"tile_size {self.tile_size} must be one or three positive multiples of {alignment}")
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
        two_resolution = not args and not kwargs and _is_two_resolution(network, margin)
        low = self._low_features(padded, network, [n * t for n, t in zip(counts, tiles)]) if two_resolution else None
        bar = _progress(len(origins)) if self.progress else None
        b = inputs.shape[0]
        for start in range(0, len(origins), self.tiles_per_batch):
            batch_origins = origins[start : start + self.tiles_per_batch]
            batch = torch.cat([self._input_tile(padded, o, tiles, margin) for o in batch_origins], dim=0)
            batch = batch.contiguous(memory_format=self.memory_format)
            if low is None:
                logits = network(batch, *args, **kwargs)
            else:
                f = network.downsample
                blocks = [low[(slice(None), slice(None), *(slice(o // f, (o + t) // f) for o, t in zip(origin, tiles)))]
                          for origin in batch_origins]  # fmt: skip
                logits = network.forward_with_low_features(batch, torch.cat(blocks, dim=0))
            if list(logits.shape[2:]) != tiles:
                raise ValueError(f"the network turned input tiles of {list(batch.shape[2:])} into outputs of "
                                 f"{list(logits.shape[2:])}, expected {tiles}: margin {margin} is not its per-side "
                                 "loss of voxels")  # fmt: skip
            pred = self._finish(logits)
            for i, origin in enumerate(batch_origins):
                region = tuple(slice(o, min(o + t, s)) for o, t, s in zip(origin, tiles, shape))
                extent = tuple(r.stop - r.start for r in region)
                yield region, pred[i * b : (i + 1) * b, :, : extent[0], : extent[1], : extent[2]]
            if bar is not None:
                bar.update(len(batch_origins))
        if bar is not None:
            bar.close()

    def _low_features(self, padded: torch.Tensor, network, extent: Sequence[int]) -> torch.Tensor:
        """The low path's output over the whole padded output region (``extent / downsample`` voxels per axis),
        computed in blocks of ``low_tile_size`` from ``network.low_resolution_input(padded)``: exact, as each block's
        input carries the path's margin of real (not padded) low-resolution voxels."""
        f, lm = network.downsample, network.low_margin
        x_low = network.low_resolution_input(padded)
        shape = [e // f for e in extent]
        result: torch.Tensor | None = None
        step = self.low_tile_size
        for origin in itertools.product(*[range(0, s, step) for s in shape]):
            stop = [min(o + step, s) for o, s in zip(origin, shape)]
            block = x_low[(slice(None), slice(None), *(slice(o, e + 2 * lm) for o, e in zip(origin, stop)))]
            features = network.low(block.contiguous(memory_format=self.memory_format))
            if result is None:
                result = torch.empty((padded.shape[0], features.shape[1], *shape), dtype=features.dtype,
                                     device=features.device)  # fmt: skip
            result[(slice(None), slice(None), *(slice(o, e) for o, e in zip(origin, stop)))] = features
        assert result is not None
        return result

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


def _is_two_resolution(network, margin: int) -> bool:
    """Whether ``network`` can take low-resolution features computed once per volume (see the class docstring)."""
    needed = ("low_resolution_input", "forward_with_low_features", "low", "low_margin", "downsample", "input_margin")
    return all(hasattr(network, a) for a in needed) and margin == network.input_margin


def _progress(total: int):
    from tqdm import tqdm

    return tqdm(total=total, desc="tiles", leave=False)
