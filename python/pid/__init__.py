"""pid: a fast, faithful inference engine for PiD, NVIDIA's pixel diffusion decoder."""

from .checkpoint import CheckpointError
from .config import ConfigError, PidConfig
from .decoder import PidDecoder, decode, load
from .nn import PidNet
from .variants import VARIANTS, Variant, get_variant

__version__ = "0.1.0"

__all__ = ["CheckpointError", "ConfigError", "PidConfig", "PidDecoder", "PidNet", "VARIANTS", "Variant",
           "__version__", "decode", "get_variant", "load"]
