"""Memory of a decode, in one place: estimated before it runs (`estimate.py`), fitted to a budget or to the device
(`budget.py`), and measured (`measure.py`)."""

from .budget import CHUNKS, MemoryPlan, check_fits, decode_chunks, parse_bytes, plan_for_budget
from .estimate import MemoryEstimate, estimate_memory, pixel_chunk_for_budget
from .measure import OutOfMemoryError, TensorMemoryTracker, available_bytes, parameter_bytes

__all__ = ["CHUNKS", "MemoryEstimate", "MemoryPlan", "OutOfMemoryError", "TensorMemoryTracker", "available_bytes", "check_fits",
           "decode_chunks", "estimate_memory", "parameter_bytes", "parse_bytes", "pixel_chunk_for_budget",
           "plan_for_budget"]
