"""Network architectures: bmshj2018-factorized, bmshj2018-hyperprior and a stain-aware variant.

All are CompressAI models, so CompressAI's own weights load into them unchanged. The stain-aware
model (in the spirit of SQLC) feeds the analysis transform RGB plus the hematoxylin, eosin and
residual optical densities of a fixed colour deconvolution, and reconstructs RGB only: the
decoder is exactly the factorized decoder, so decoding costs the same.
"""

from __future__ import annotations

import torch
from compressai.models import FactorizedPrior, ScaleHyperprior
from compressai.models.utils import conv
from torch import nn

from wsitranscode.neural.stain import StainFeatures

ARCHITECTURES = ("factorized", "hyperprior", "stain-aware")


class StainAwareFactorized(FactorizedPrior):
    """bmshj2018-factorized whose encoder also sees H, E and residual optical densities."""

    def __init__(self, N: int, M: int, **kwargs: object):
        super().__init__(N, M, **kwargs)
        self.stain = StainFeatures()
        self.g_a[0] = conv(3 + StainFeatures.channels, N)

    def forward(self, x: torch.Tensor) -> dict:
        y = self.g_a(self.stain(x))
        y_hat, y_likelihoods = self.entropy_bottleneck(y)
        return {"x_hat": self.g_s(y_hat), "likelihoods": {"y": y_likelihoods}}

    def compress(self, x: torch.Tensor) -> dict:
        return super().compress(self.stain(x))


def build(arch: str, n: int, m: int) -> nn.Module:
    """A fresh (untrained) network of this architecture."""
    if arch == "factorized":
        return FactorizedPrior(n, m)
    if arch == "hyperprior":
        return ScaleHyperprior(n, m)
    if arch == "stain-aware":
        return StainAwareFactorized(n, m)
    raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")


def stride_of(arch: str) -> int:
    """Tiles are padded to a multiple of this: the product of the strides to the last latent."""
    return 64 if arch == "hyperprior" else 16


def infer_shape(arch: str, state_dict: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(N, M) of a state dict, as CompressAI's from_state_dict finds them."""
    n = int(state_dict["g_a.0.weight"].size(0))
    m = int(state_dict["g_a.6.weight"].size(0))
    return n, m


def infer_arch(state_dict: dict[str, torch.Tensor]) -> str:
    """The architecture a (CompressAI or wsitranscode) state dict belongs to."""
    if "stain.hed_from_rgb" in state_dict:
        return "stain-aware"
    if any(key.startswith("h_a.") for key in state_dict):
        return "hyperprior"
    return "factorized"
