"""Loss for training patches."""

from __future__ import annotations

import torch
from torch import nn

from autolr_monai.sampling.patches import IGNORE_LABEL


class PatchCrossEntropyLoss(nn.CrossEntropyLoss):
    """Cross-entropy (section 4.1) on channel-first integer labels ``(B, 1, ...)``, ignoring voxels outside the
    volume (``IGNORE_LABEL``). ``torch.nn.CrossEntropyLoss`` wants ``(B, ...)`` long targets; MONAI has no plain
    cross-entropy loss."""

    def __init__(self, ignore_index: int = IGNORE_LABEL, **kwargs) -> None:
        super().__init__(ignore_index=ignore_index, **kwargs)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.ndim == logits.ndim:
            target = target[:, 0]
        return super().forward(logits, target.long())
