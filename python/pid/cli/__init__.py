"""The `pid` command line: `main` (the console script), `build_parser`; one module per group of commands."""

from .captions import encode_caption_command
from .main import build_parser, main

__all__ = ["build_parser", "encode_caption_command", "main"]
