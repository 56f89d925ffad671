"""Networks: the dual-path 3D ResNet of section 3.3."""

from .dual_path import DualPathResNet3D, paper_config

__all__ = ["DualPathResNet3D", "paper_config"]
