"""Caption conditioning for PiD: the `[B, 300, 2304]` caption embeddings the network receives.

The network never sees a caption string, only these embeddings. They come either from precomputed files
(`pid encode-caption` on a machine that has Gemma, or any one-tensor `.pt`/`.safetensors`) or from Gemma-2 run here
(`pip install 'pid-decoder[text]'`), through a cache that outlives the process. There is no silent fallback: the
in-distribution "no caption" condition is the encoding of the CHI-prefixed empty caption `""`, not a zero tensor.

    gemma.py    the encoder as the reference runs it (CHI prompt, 300-token window), `encoder_session`
    files.py    caption-embedding files
    cache.py    `CaptionCache` (by encoder and caption; in memory and on disk)
    resolve.py  `resolve_caption_embeds`: one decode's embeddings from whatever the caller gave
"""

from .cache import CaptionCache, caption_cache_key, default_cache_dir
from .files import (CACHE_KEY_METADATA_KEY, CAPTIONS_METADATA_KEY, EMBEDS_KEY, MODEL_ID_METADATA_KEY, check_embeds,
                    load_caption_embeds, save_caption_embeds)
from .gemma import (CHI_PROMPT, CHI_PROMPT_LINES, DEFAULT_MODEL_ID, DEFAULT_NEGATIVE_PROMPT, INSTALL_HINT, TXT_DIM,
                    TXT_LEN, CaptionEncoder, TextEncoderUnavailable, encode_with_chi_prompt, encoder_cache_key,
                    encoder_session)
from .resolve import resolve_caption_embeds

__all__ = [
    "CACHE_KEY_METADATA_KEY", "CAPTIONS_METADATA_KEY", "CHI_PROMPT", "CHI_PROMPT_LINES", "DEFAULT_MODEL_ID",
    "DEFAULT_NEGATIVE_PROMPT", "EMBEDS_KEY", "INSTALL_HINT", "MODEL_ID_METADATA_KEY", "TXT_DIM", "TXT_LEN",
    "CaptionCache", "CaptionEncoder", "TextEncoderUnavailable", "caption_cache_key", "check_embeds",
    "default_cache_dir", "encode_with_chi_prompt", "encoder_cache_key", "encoder_session", "load_caption_embeds",
    "resolve_caption_embeds", "save_caption_embeds",
]
