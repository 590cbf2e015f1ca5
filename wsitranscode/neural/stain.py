"""Colour deconvolution into hematoxylin, eosin and residual optical densities (Ruifrok-Johnston).

Beer-Lambert: optical density OD = -log10(I / I0) per RGB channel; the stain amounts are OD times
the inverse of the stain matrix. The matrix is scikit-image's `rgb_from_hed` (Ruifrok & Johnston
2001, H&E-DAB), whose third vector we call the residual: on H&E tissue it holds what neither
stain explains. Values are scaled so that an 8-bit pixel's OD lies in [0, 1].
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

# Rows: the OD vectors of hematoxylin, eosin and the residual (DAB) stain, unit length.
RGB_FROM_HED = np.array(
    [[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=np.float64
)
HED_FROM_RGB = np.linalg.inv(RGB_FROM_HED)
_OD_SCALE = 1.0 / math.log(256.0)  # OD of the darkest 8-bit value (1/256 transmission) -> 1


def optical_density(rgb: torch.Tensor) -> torch.Tensor:
    """Per-channel OD of RGB in [0, 1] (Bx3xHxW), scaled to [0, 1]; +1/256 keeps black finite."""
    return -torch.log((rgb * 255.0 + 1.0) / 256.0) * _OD_SCALE


class StainFeatures(nn.Module):
    """RGB (Bx3xHxW, [0, 1]) -> RGB plus H, E, residual densities (Bx6xHxW)."""

    channels = 3

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("hed_from_rgb", torch.tensor(HED_FROM_RGB, dtype=torch.float32))

    def forward(self, rgb: torch.Tensor) -> torch.Tensor:
        od = optical_density(rgb)
        hed = torch.einsum("bchw,cd->bdhw", od, self.hed_from_rgb)
        return torch.cat([rgb, hed], dim=1)


def hed_numpy(rgb: np.ndarray) -> np.ndarray:
    """H, E, residual densities of an HxWx3 uint8 image (for inspection and tests)."""
    od = -np.log((rgb.astype(np.float64) + 1.0) / 256.0) * _OD_SCALE
    return od @ HED_FROM_RGB
