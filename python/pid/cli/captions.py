"""`pid encode-caption`: captions encoded with Gemma-2 into an embeddings file, for machines without it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from .args import (check_device, check_output, require)

log = logging.getLogger("pid.cli")


def encode_caption_command(captions: Sequence[str], out, model_id=None, device="cpu", *,
                           local_files_only: bool = False) -> Path:
    """Body of `pid encode-caption`: encode `captions` with Gemma and write one `.safetensors` file to `out`."""
    from pid.captions import DEFAULT_MODEL_ID, CaptionEncoder, save_caption_embeds
    from pid.errors import PidError

    model_id = DEFAULT_MODEL_ID if model_id is None else model_id
    captions = [captions] if isinstance(captions, str) else list(captions)
    if not captions:
        raise PidError("give at least one caption (\"\" is the 'no caption' condition)")
    encoder = CaptionEncoder(model_id, device=device, local_files_only=local_files_only)
    embeds = encoder.encode(captions)
    path = save_caption_embeds(out, embeds, captions, model_id=str(model_id))
    log.info("wrote %d caption embedding(s) %s %s (%s) to %s", len(captions), list(embeds.shape),
             str(embeds.dtype).removeprefix("torch."), model_id, path)
    return path


def cmd_encode_caption(args) -> int:
    out = check_output(args.out, [".safetensors"], "--out")
    require("transformers", "encode-caption", "pip install 'pid-decoder[text]'")
    check_device(args.device)

    encode_caption_command(args.caption, out, model_id=args.model, device=args.device)
    return 0


def register(sub, fmt) -> None:
    """Adds these commands to the `pid` parser's subcommands."""
    p = sub.add_parser("encode-caption", help="encode a caption with Gemma-2 into an embeddings file",
                       formatter_class=fmt)
    p.add_argument("caption", nargs="+", help="one or more captions")
    p.add_argument("--out", required=True, help="the .safetensors file to write")
    p.add_argument("--model", default="Efficient-Large-Model/gemma-2-2b-it", help="model id or local folder")
    p.add_argument("--device", default="cpu", help="where Gemma-2 runs: cpu, cuda or cuda:N")
    p.set_defaults(func=cmd_encode_caption)
