"""Dual-path 3D ResNet of Berger et al. (MIDL 2018), section 3.3: a reconstruction.

Two pathways of pre-activation resnet blocks with *valid* 3x3x3 convolutions (DeepMedic style, Kamnitsas et al.
2017): a normal pathway at full resolution and a pathway at 1/``downsample`` resolution whose input is the image
smoothed by a 3-voxel box filter and subsampled (``avg_pool3d(kernel=3, stride=downsample)``). The low-resolution
features are upsampled by repetition, concatenated with the full-resolution ones, and classified by fully
connected layers implemented as 1x1x1 convolutions, each preceded by dropout. The network returns logits; apply a
softmax over the channel axis for probabilities.

Geometry (per axis, in voxels of the full-resolution grid): with ``h`` the number of 3x3x3 convolutions of the
normal path and ``l`` that of the low path, an output of ``S`` voxels needs a full-resolution input of
``S + 2 h`` voxels and a low-resolution input of ``ceil(S / f) + 2 l`` voxels; the low-resolution voxel ``j`` is
centred on full-resolution offset ``f (j - l)`` from the first output voxel. Fed from one full-resolution tensor
(``forward(x)``), the input needs a margin ``M = max(h, f l + 1)`` on each side. The receptive field of the low
path is ``2 f l + 3``: 123 for ``f = 4`` and ``l = 15``.

The paper's layer table (its figure 1a) is not available; ``paper_config()`` gives the reconstruction documented
in ``bundle/docs/README.md``. The network compiles with ``torch.jit.script``, so MONAI's ``ckpt_export`` can export
it to TorchScript. This module imports nothing else from the project.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

BLOCK_TYPES = ("conv", "RA", "RB")
_CONV3_COUNT = {"conv": 1, "RA": 2, "RB": 1}  # 3x3x3 convolutions per block type
_WEIGHT_LAYERS = {"conv": 1, "RA": 2, "RB": 3}


def _crop(x: torch.Tensor, margin: int) -> torch.Tensor:
    if margin == 0:
        return x
    return x[..., margin:-margin, margin:-margin, margin:-margin]


def _norm_act(channels: int) -> list[nn.Module]:
    return [nn.BatchNorm3d(channels), nn.PReLU(channels)]


class ConvLayer(nn.Module):
    """The plain first layer of a pathway ('Conv' in figure 1a): a valid 3x3x3 convolution on the raw input."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, 3, bias=False)
        self.margin = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ResidualBlock(nn.Module):
    """Pre-activation resnet block with valid convolutions (He et al. 2016, as in DeepMedic).

    'RA' (standard): BN-PReLU-conv3, BN-PReLU-conv3. 'RB' (bottleneck): BN-PReLU-conv1 to ``bottleneck`` channels,
    BN-PReLU-conv3, BN-PReLU-conv1 back to ``out_channels``. The shortcut is the input centre-cropped to the output
    size, zero-padded in channels when the block widens (parameter-free, as DeepMedic).
    """

    __jit_unused_properties__ = ["last_norm"]  # eager-only (a filtered comprehension); TorchScript compiles properties

    def __init__(self, kind: str, in_channels: int, out_channels: int, bottleneck: int | None = None) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"a residual block cannot narrow ({in_channels} -> {out_channels} channels)")
        self.kind = kind
        self.pad_channels = out_channels - in_channels
        if kind == "RA":
            layers = [*_norm_act(in_channels), nn.Conv3d(in_channels, out_channels, 3, bias=False)]
            layers += [*_norm_act(out_channels), nn.Conv3d(out_channels, out_channels, 3, bias=False)]
            self.margin = 2
        elif kind == "RB":
            b = bottleneck or max(1, out_channels // 2)
            layers = [*_norm_act(in_channels), nn.Conv3d(in_channels, b, 1, bias=False)]
            layers += [*_norm_act(b), nn.Conv3d(b, b, 3, bias=False)]
            layers += [*_norm_act(b), nn.Conv3d(b, out_channels, 1, bias=False)]
            self.margin = 1
        else:
            raise ValueError(f"unknown residual block type {kind!r}; expected 'RA' or 'RB'")
        self.body = nn.Sequential(*layers)

    @property
    def last_norm(self) -> nn.BatchNorm3d:
        """The batch norm feeding the block's last convolution (zero-initialised, Goyal et al. 2017)."""
        return [m for m in self.body if isinstance(m, nn.BatchNorm3d)][-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = _crop(x, self.margin)
        if self.pad_channels:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, 0, 0, self.pad_channels))
        return self.body(x) + shortcut


class Pathway(nn.Sequential):
    """A sequence of ('conv' | 'RA' | 'RB', channels) blocks; ``margin`` is its per-side loss of voxels."""

    def __init__(self, in_channels: int, blocks: Sequence[Sequence], bottleneck_ratio: float) -> None:
        layers: list[nn.Module] = []
        channels = in_channels
        for i, (kind, width) in enumerate(blocks):
            width = int(width)
            if kind not in BLOCK_TYPES:
                raise ValueError(f"block {i}: unknown type {kind!r}; expected one of {BLOCK_TYPES}")
            if kind == "conv":
                layers.append(ConvLayer(channels, width))
            else:
                layers.append(ResidualBlock(kind, channels, width, max(1, round(width * bottleneck_ratio))))
            channels = width
        super().__init__(*layers)
        self.out_channels = channels
        self.conv3_count = sum(_CONV3_COUNT[kind] for kind, _ in blocks)
        self.weight_layers = sum(_WEIGHT_LAYERS[kind] for kind, _ in blocks)


class DualPathResNet3D(nn.Module):
    """Dual-path 3D ResNet with valid convolutions; fully convolutional.

    Args:
        in_channels: image channels.
        out_channels: classes (including background).
        high_blocks: blocks of the full-resolution path as ``(type, channels)``, type 'conv', 'RA' or 'RB'.
        low_blocks: blocks of the low-resolution path, same format.
        fc_channels: widths of the hidden fully connected (1x1x1) layers; the classifier is added after them.
        dropout: dropout probability before every fully connected layer (0.5 in the paper).
        downsample: resolution factor of the low path (4 in the paper).
        bottleneck_ratio: bottleneck width of 'RB' blocks relative to their output width.

    ``forward(x)`` takes one full-resolution tensor with margin ``input_margin`` on each side and builds the low
    path's input itself; ``forward(x_high, x_low)`` takes both inputs as extracted by the training pipeline.
    """

    # Eager-only geometry API: TorchScript would compile these properties (some cannot be compiled, and compiled ones
    # are not readable from Python on a scripted module); scripted code uses the int attributes ``_*_margin``.
    __jit_unused_properties__ = ["high_margin", "low_margin", "input_margin", "receptive_field", "depth", "fc_layers"]

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 21,
        high_blocks: Sequence[Sequence] | None = None,
        low_blocks: Sequence[Sequence] | None = None,
        fc_channels: Sequence[int] | None = None,
        dropout: float = 0.5,
        downsample: int = 4,
        bottleneck_ratio: float = 0.5,
    ) -> None:
        super().__init__()
        default = paper_config()
        high_blocks = default["high_blocks"] if high_blocks is None else high_blocks
        low_blocks = default["low_blocks"] if low_blocks is None else low_blocks
        fc_channels = default["fc_channels"] if fc_channels is None else fc_channels
        if not high_blocks or not low_blocks or high_blocks[0][0] != "conv" or low_blocks[0][0] != "conv":
            raise ValueError("each path must be non-empty and start with a 'conv' layer")
        if downsample < 1:
            raise ValueError(f"downsample must be >= 1, got {downsample}")
        self.in_channels, self.out_channels, self.downsample = in_channels, out_channels, downsample
        self.dropout = dropout
        self.high = Pathway(in_channels, high_blocks, bottleneck_ratio)
        self.low = Pathway(in_channels, low_blocks, bottleneck_ratio)
        self._high_margin, self._low_margin = self.high.conv3_count, self.low.conv3_count
        self._input_margin = max(self._high_margin, downsample * self._low_margin + 1)
        fc: list[nn.Module] = []
        channels = self.high.out_channels + self.low.out_channels
        for width in [*fc_channels, out_channels]:
            fc += [*_norm_act(channels), nn.Dropout(dropout)]
            fc.append(nn.Conv3d(channels, width, 1))
            channels = width
        self.head = nn.Sequential(*fc)
        self.classifier = fc[-1]
        self._initialise()

    # --- geometry -------------------------------------------------------------------------------------------
    @property
    def high_margin(self) -> int:
        return self._high_margin

    @property
    def low_margin(self) -> int:
        """Per-side margin of the low path, in low-resolution voxels."""
        return self._low_margin

    @property
    def input_margin(self) -> int:
        """Per-side margin of the single full-resolution input of ``forward(x)``."""
        return self._input_margin

    @property
    def receptive_field(self) -> int:
        """Extent in full-resolution voxels of the input that one output voxel depends on (worst phase)."""
        f, h, lo = self.downsample, self.high_margin, self.downsample * self.low_margin + 1
        return max(max(lo, r + h) + max(lo, h - r) + 1 for r in range(f))

    @property
    def depth(self) -> int:
        """Weight layers of the deepest path, fully connected layers included."""
        return max(self.high.weight_layers, self.low.weight_layers) + len(self.fc_layers)

    @property
    def fc_layers(self) -> list[nn.Conv3d]:
        return [m for m in self.head if isinstance(m, nn.Conv3d)]

    def low_res_size(self, output_size: int) -> int:
        return math.ceil(output_size / self.downsample) + 2 * self._low_margin

    def input_sizes(self, output_size: Sequence[int] | int) -> dict[str, tuple[int, ...]]:
        """Input extents for a wanted output size: keys 'high', 'low' (two-input form) and 'full' (``forward(x)``)."""
        out = (output_size,) * 3 if isinstance(output_size, int) else tuple(output_size)
        return {
            "high": tuple(s + 2 * self.high_margin for s in out),
            "low": tuple(self.low_res_size(s) for s in out),
            "full": tuple(s + 2 * self.input_margin for s in out),
        }

    def output_size(self, full_input_size: Sequence[int]) -> tuple[int, ...]:
        """Output extent of ``forward(x)`` for a full-resolution input extent."""
        return tuple(self._output_extent([int(s) for s in full_input_size]))

    def _output_extent(self, full_input_size: list[int]) -> list[int]:
        # lists, not tuples: TorchScript has no variable-length tuples
        out = [s - 2 * self._input_margin for s in full_input_size]
        if min(out) < 1:
            raise ValueError(f"input {full_input_size} is smaller than the receptive field margin "
                             f"2 x {self._input_margin} + 1 per axis")  # fmt: skip
        return out

    def layer_table(self, output_size: int = 16) -> list[str]:
        """Markdown table of every weight layer (path, block, kernel, channels, resolution, extent per axis for an
        output of ``output_size``) for the documentation."""
        rows = ["| # | path | block | layer | kernel | channels | resolution | extent (voxels) |",
                "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        sizes = self.input_sizes(output_size)
        number = 0
        for path, pathway, extent, resolution in (
            ("full-res", self.high, sizes["high"][0], "1"),
            ("low-res", self.low, sizes["low"][0], f"1/{self.downsample}"),
        ):
            for b, block in enumerate(pathway):
                kind = "Conv" if isinstance(block, ConvLayer) else f"{block.kind}_block"
                convs = [block.conv] if isinstance(block, ConvLayer) else [m for m in block.body if isinstance(m, nn.Conv3d)]
                for i, conv in enumerate(convs):
                    number += 1
                    k = conv.kernel_size[0]
                    extent -= k - 1
                    rows.append(f"| {number} | {path} | {b} {kind} | {i + 1} | {k}^3 | {conv.in_channels} -> "
                                f"{conv.out_channels} | {resolution} | {extent} |")  # fmt: skip
        for i, conv in enumerate(self.fc_layers):
            number += 1
            name = "classifier" if conv is self.classifier else f"FC {i + 1}"
            rows.append(f"| {number} | merged | {name} (dropout {self.dropout} before) | 1 | 1^3 | "
                        f"{conv.in_channels} -> {conv.out_channels} | 1 | {output_size} |")  # fmt: skip
        return rows

    # --- parameters ---------------------------------------------------------------------------------------
    def _initialise(self) -> None:
        """Glorot (Xavier uniform) on all convolutions, zero biases; BN weight 1 and bias 0, except the BN before
        the last convolution of every residual block, whose weight starts at 0 (Goyal et al. 2017, section 5.1):
        each block starts as the identity."""
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.modules():
            if isinstance(m, ResidualBlock):
                nn.init.zeros_(m.last_norm.weight)

    def parameter_groups(self, weight_decay: float) -> list[dict]:
        """Optimizer groups: L2 weight decay on every convolution weight except the classifier's (section 4.1)."""
        decayed = [m.weight for m in self.modules() if isinstance(m, nn.Conv3d) and m is not self.classifier]
        ids = {id(p) for p in decayed}
        rest = [p for p in self.parameters() if id(p) not in ids]
        return [{"params": decayed, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]

    # --- forward ------------------------------------------------------------------------------------------
    def split_input(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Build (x_high, x_low) from one full-resolution tensor with margin ``input_margin`` on each side."""
        out = self._output_extent(list(x.shape[2:]))
        x_high = _crop(x, self._input_margin - self._high_margin)
        n = [self.low_res_size(s) for s in out]
        return x_high, self.low_resolution_input(x)[..., : n[0], : n[1], : n[2]]

    def low_resolution_input(self, x: torch.Tensor) -> torch.Tensor:
        """The low path's input for the whole of ``x`` (a full-resolution tensor with margin ``input_margin``):
        ``split_input``'s ``x_low`` of any output tile starting at a multiple of ``downsample`` is the block of this
        tensor starting at ``tile start / downsample``. Lets a tiled inference run the low path once per volume."""
        offset = self._input_margin - self.downsample * self._low_margin - 1  # low voxel j covers
        # x[offset + f j + (0, 1, 2)], centred at output offset f (j - l)
        return F.avg_pool3d(x[..., offset:, offset:, offset:], kernel_size=3, stride=self.downsample)

    def forward_with_low_features(self, x: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        """``forward(x)`` with the low path's output ``low`` (``ceil(S / downsample)`` voxels per output axis)
        computed elsewhere, e.g. once for a whole volume (``low_resolution_input``, then ``self.low``)."""
        out = self._output_extent(list(x.shape[2:]))
        expected = [(s + self.downsample - 1) // self.downsample for s in out]
        if list(low.shape[2:]) != expected:
            raise ValueError(f"low-resolution features {list(low.shape[2:])} do not fit the output {out}: "
                             f"expected {expected}")  # fmt: skip
        return self._merge(self.high(_crop(x, self._input_margin - self._high_margin)), low)

    def _merge(self, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        """Upsample the low path's features by repetition, crop them to the full-resolution output and classify."""
        for axis in (2, 3, 4):
            low = low.repeat_interleave(self.downsample, dim=axis)
        low = low[..., : high.shape[2], : high.shape[3], : high.shape[4]]
        return self.head(torch.cat([high, low], dim=1))

    def forward(self, x: torch.Tensor, x_low: torch.Tensor | None = None) -> torch.Tensor:
        x_high = x
        if x_low is None:
            x_high, x_low = self.split_input(x)
        high_size, low_size = list(x_high.shape[2:]), list(x_low.shape[2:])  # lists for TorchScript
        out = [s - 2 * self._high_margin for s in high_size]
        expected = [self.low_res_size(s) for s in out]
        if min(out) < 1 or low_size != expected:
            raise ValueError(
                f"input sizes do not match: high-resolution input {high_size} gives output {out}, "
                f"which needs a low-resolution input of {expected}, got {low_size}"
            )
        return self._merge(self.high(x_high), self.low(x_low))


def paper_config() -> dict:
    """Reconstructed layer table of the paper's network (1 input channel, 21 classes: 653,413 parameters,
    +0.64% of the paper's 649,251).

    Low path (1/4 resolution): Conv + 6 RA + 2 RB = 19 weight layers, 15 3x3x3 convolutions, receptive field
    2 * 4 * 15 + 3 = 123. Full-resolution path: Conv + 1 RA + 5 RB = 18 weight layers (slightly shorter), 8 3x3x3
    convolutions, mostly bottlenecks to keep the full-resolution cost low. Head: 2 fully connected layers, so the
    deepest path has 19 + 2 = 21 weight layers.
    """
    return {
        "high_blocks": [["conv", 16], ["RA", 16], ["RB", 24], ["RB", 24], ["RB", 24], ["RB", 24], ["RB", 24]],
        "low_blocks": [["conv", 30], ["RA", 30], ["RA", 40], ["RA", 40], ["RA", 40], ["RA", 48], ["RA", 48],
                       ["RB", 64], ["RB", 64]],  # fmt: skip
        "fc_channels": [128],
    }
