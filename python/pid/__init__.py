"""pid: a fast, faithful inference engine for PiD, NVIDIA's pixel diffusion decoder."""

from . import decode
from ._version import __version__
from .config import PidConfig
from .flops import decode_flops, forward_flops
from .memory import estimate_memory
from .decode import load
from .decoder import PidDecoder
from .errors import (CaptionEmbedsError, CheckpointError, ConfigError, LatentError, MemoryBudgetError,
                     NonFiniteOutputError, PidError, TensorFileError, UnknownVariantError)
from .nn import PidNet
from .plan import ExecutionPlan
from .variants import VARIANTS, Variant, get_variant

__all__ = ["CaptionEmbedsError", "CheckpointError", "ConfigError", "ExecutionPlan", "LatentError", "MemoryBudgetError",
           "NonFiniteOutputError", "PidConfig", "PidDecoder", "PidError", "PidNet", "TensorFileError",
           "UnknownVariantError", "VARIANTS", "Variant", "__version__", "decode", "decode_flops", "estimate_memory",
           "forward_flops", "get_variant", "load"]
