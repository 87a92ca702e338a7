"""The errors pid raises for bad input. Each message names the problem and the fix; all derive from `PidError`
(a ValueError), so a caller — the command line above all — can tell bad input from a bug."""


class PidError(ValueError):
    """Bad input to pid: a file, a latent, a configuration or an argument that cannot be used as given."""


class TensorFileError(PidError):
    """A file that cannot be read as tensors (missing, truncated, not a tensor file, or unsafe to unpickle)."""


class CheckpointError(PidError):
    """A checkpoint that cannot be read, is not a PiD checkpoint, or does not fit the chosen network."""


class ConfigError(PidError):
    """A network configuration that is invalid or describes something pid does not implement."""


class LatentError(PidError):
    """A latent, statistics file or noise request that cannot be used as asked."""


class CaptionEmbedsError(PidError):
    """Caption embeddings that cannot be read or do not have the shape/values PiD needs."""


class NonFiniteOutputError(PidError):
    """A decode produced NaN or infinite values (never saved as an image): the message says where they came from."""


class MemoryBudgetError(PidError):
    """A decode that would need more memory than its device has; the message gives the estimate and what fits."""


class UnknownVariantError(PidError, KeyError):
    """A variant name that is not in the registry (also a KeyError, as a failed lookup)."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


def one_line(e: BaseException) -> str:
    """An error's message on one line (what a command line or an HTTP error reply shows), else its type's name."""
    return " ".join(line.strip() for line in str(e).splitlines() if line.strip()) or type(e).__name__
