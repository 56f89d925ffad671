"""Inference: exact tiled whole-volume inference for valid-convolution networks."""

from .tiled import ExactTiledInferer

__all__ = ["ExactTiledInferer"]
