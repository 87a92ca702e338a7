"""pid: a fast, faithful inference engine for PiD, NVIDIA's pixel diffusion decoder."""

from .checkpoint import CheckpointError
from .config import ConfigError, PidConfig
from .cost import decode_flops, estimate_memory, forward_flops
from .decoder import PidDecoder, decode, load
from .nn import PidNet
from .variants import VARIANTS, Variant, get_variant

__version__ = "0.1.0"

__all__ = ["CheckpointError", "ConfigError", "PidConfig", "PidDecoder", "PidNet", "VARIANTS", "Variant",
           "__version__", "decode", "decode_flops", "estimate_memory", "forward_flops", "get_variant", "load"]
