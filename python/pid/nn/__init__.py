"""The PiD network, as small named modules with the reference parameter names."""

from .latent_adapter import GateInput, LatentProjection, SigmaGate
from .pidnet import LatentCondition, PidNet, TextCondition, TimeCondition

__all__ = ["GateInput", "LatentCondition", "LatentProjection", "PidNet", "SigmaGate", "TextCondition", "TimeCondition"]
