"""The released checkpoints on the Hugging Face Hub (`nvidia/PiD`): a variant's name → its local file.

Each released checkpoint is `checkpoints/<experiment>/model_ema_bf16.pth` in the Hub repo `nvidia/PiD`. A variant
name (a registry name, experiment name or official registry key) is found in the Hugging Face cache without any
network call, else downloaded alone through `huggingface_hub` (never the whole 26 GB repo). The cache is
huggingface_hub's own (`HF_HOME` / `HF_HUB_CACHE`), and so is offline mode (`HF_HUB_OFFLINE=1`): no network.
`huggingface_hub` is optional (`pip install 'pid-decoder[hub]'`) and imported only here, only when a variant is fetched.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Optional

from .errors import CheckpointError, PidError, UnknownVariantError
from .variants import Variant, get_variant

log = logging.getLogger(__name__)

REPO_ID = "nvidia/PiD"
MODEL_CARD = "https://huggingface.co/nvidia/PiD"
FILENAME = "model_ema_bf16.pth"
LICENCE = (f"the PiD weights ({REPO_ID}) are licensed under the NVIDIA Source Code License (NSCLv1), for "
           f"non-commercial use only (pid's own code is Apache-2.0): read the model card, {MODEL_CARD}")
INSTALL = "pip install 'pid-decoder[hub]'"
# Added to "does not exist" errors: the other thing a checkpoint argument may be.
VARIANT_HINT = "a released variant's name (e.g. 'flux-v1.5', see `pid variants`) also works: it is fetched from " \
               "the Hugging Face Hub"

_licence_named = False  # the licence is named once per process, before the first download


def hub_filename(variant: Variant) -> str:
    """The file of `variant` in the Hub repo: checkpoints/<experiment>/model_ema_bf16.pth."""
    return f"checkpoints/{variant.experiment}/{FILENAME}"


def named_variant(source: Any) -> Optional[Variant]:
    """The released variant a checkpoint argument names, or None: a Variant, or a str that is not an existing file
    but a registry name, experiment name or official registry key. A path object is always a file; an existing file
    wins over a variant of the same name."""
    if isinstance(source, Variant):
        return source
    if not isinstance(source, str) or Path(source).is_file():
        return None
    try:
        return get_variant(source)
    except UnknownVariantError:
        return None


def resolve_checkpoint(source: "str | os.PathLike | Variant", *, variant: Optional[str] = None,
                       revision: Optional[str] = None,
                       token: "str | bool | None" = None) -> tuple[Path, Optional[Variant]]:
    """A checkpoint argument of `pid.load` as a local file: (path, the variant it names or None).

    A file stays as it is; a variant name comes from the Hugging Face cache or the Hub (`checkpoint_path`). A str
    that is neither gets the "does not exist" error; `variant=` must agree with a variant name; `revision=` applies
    only to a variant name."""
    named = named_variant(source)
    if named is None:
        if isinstance(source, str) and not Path(source).is_file():
            raise CheckpointError(f"checkpoint {source!r} does not exist or is not a file; {VARIANT_HINT}")
        refuse_revision(revision, f"{str(source)!r} names a file")
        return Path(source), None
    if variant is not None and get_variant(variant) is not named:
        raise CheckpointError(f"{source if isinstance(source, str) else named.name!r} is the released checkpoint of "
                              f"variant {named.name!r}, but variant={variant!r} names {get_variant(variant).name!r}: "
                              "drop variant= (the name decides) or pass that variant's name or file")
    return checkpoint_path(named, revision=revision, token=token), named


def refuse_revision(revision: Optional[str], what: str) -> None:
    """PidError if `revision` is given for something that is not a variant name (`what` says what it is)."""
    if revision is not None:
        raise PidError(f"revision {revision!r} selects a version of a released checkpoint on the Hugging Face Hub, "
                       f"but {what}: name a variant instead, or drop the revision")


def checkpoint_path(variant: "str | Variant", *, revision: Optional[str] = None,
                    token: "str | bool | None" = None) -> Path:
    """The local path of a released variant's checkpoint: from the Hugging Face cache if it is there (no network
    call), else downloaded (that one file) with `hf_hub_download`. `revision`: a branch, tag or commit of nvidia/PiD
    (default: main); `token`: a Hugging Face token (default: huggingface_hub's, e.g. HF_TOKEN)."""
    v = variant if isinstance(variant, Variant) else get_variant(variant)
    hf = require_huggingface_hub(v)
    filename = hub_filename(v)
    cached = hf.try_to_load_from_cache(REPO_ID, filename, revision=revision)
    if isinstance(cached, str):
        log.info("%s: %s (Hugging Face cache)", v.name, cached)
        return Path(cached)
    at = "" if revision is None else f" at revision {revision!r}"
    if _offline():
        from huggingface_hub import constants

        rev = "" if revision is None else f" --revision {revision}"
        raise CheckpointError(
            f"the checkpoint of variant {v.name!r} ({filename} of {REPO_ID}{at}) is not in the Hugging Face cache "
            f"({constants.HF_HUB_CACHE}) and offline mode (HF_HUB_OFFLINE=1) forbids downloading it: run "
            f"`pid download {v.name}{rev}` (or `hf download {REPO_ID} {filename}{rev}`) with network access and the "
            "same HF_HOME / HF_HUB_CACHE, or pass the path of a downloaded file")
    name_licence()
    log.info("downloading %s from %s%s", filename, REPO_ID, at)
    return Path(_download(hf, v, filename, revision, token))


def require_huggingface_hub(variant: Variant):
    """The huggingface_hub module; PidError naming the install command when it is missing."""
    try:
        import huggingface_hub
    except ImportError as e:
        raise PidError(f"fetching the checkpoint of variant {variant.name!r} from the Hugging Face Hub needs "
                       f"huggingface_hub, which is not installed: {INSTALL} (or pass the path of a downloaded "
                       f"{FILENAME})") from e
    return huggingface_hub


def name_licence() -> None:
    """Log the weights' licence, once per process."""
    global _licence_named
    if not _licence_named:
        _licence_named = True
        log.warning("%s", LICENCE)


def _offline() -> bool:
    """huggingface_hub's offline mode (HF_HUB_OFFLINE, read by huggingface_hub when it is imported)."""
    from huggingface_hub import constants

    is_offline = getattr(constants, "is_offline_mode", None)  # newer huggingface_hub; before, the constant alone
    return bool(is_offline() if is_offline is not None else constants.HF_HUB_OFFLINE)


def _download(hf, v: Variant, filename: str, revision: Optional[str], token) -> str:
    """hf_hub_download, with its errors turned into CheckpointErrors that say what to do."""
    from huggingface_hub import utils as hf_errors

    where = f"{filename} of {REPO_ID}" + ("" if revision is None else f" at revision {revision!r}")
    try:
        return hf.hf_hub_download(REPO_ID, filename, revision=revision, token=token)
    except hf_errors.LocalEntryNotFoundError as e:  # no connection (and not cached)
        raise CheckpointError(
            f"could not download {where}: the Hugging Face Hub cannot be reached ({_first_line(e)}). Retry with "
            f"network access (`pid download {v.name}`), or pass the path of a downloaded file") from e
    except hf_errors.RevisionNotFoundError as e:
        raise CheckpointError(f"{REPO_ID} has no revision {revision!r}: give a branch, tag or commit of "
                              f"{MODEL_CARD} (default: main)") from e
    except hf_errors.EntryNotFoundError as e:
        raise CheckpointError(f"{REPO_ID} has no file {filename}{'' if revision is None else f' at {revision!r}'}: "
                              f"the release may have moved it; see {MODEL_CARD}/tree/main/checkpoints") from e
    except hf_errors.RepositoryNotFoundError as e:  # also a gated or private repo without a valid token
        raise CheckpointError(f"cannot access {REPO_ID} ({_first_line(e)}): check the token (token=, --token, "
                              "HF_TOKEN or `hf auth login`)") from e
    except hf_errors.HfHubHTTPError as e:
        raise CheckpointError(f"could not download {where}: {_first_line(e)}") from e


def _first_line(e: BaseException) -> str:
    return next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)
