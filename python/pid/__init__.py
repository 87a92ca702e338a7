"""pid: a fast, faithful inference engine for PiD, NVIDIA's pixel diffusion decoder."""

from . import decode
from ._version import __version__
from .checkpoint import CheckpointError
from .config import ConfigError, PidConfig
from .cost import decode_flops, estimate_memory, forward_flops
from .decode import load
from .decoder import PidDecoder
from .nn import PidNet
from .plan import ExecutionPlan
from .variants import VARIANTS, Variant, get_variant

__all__ = ["CheckpointError", "ConfigError", "ExecutionPlan", "PidConfig", "PidDecoder", "PidNet", "VARIANTS",
           "Variant", "__version__", "decode", "decode_flops", "estimate_memory", "forward_flops", "get_variant",
           "load"]
