"""Caption conditioning: the CHI prefix, the reference token window, embedding files, the
caption cache and resolving embeddings. No transformers and no download: a fake tokenizer and model."""

import hashlib
import json
import logging
import os
import subprocess
import sys
import types

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

from pid import captions
from pid.captions import (CHI_PROMPT, DEFAULT_MODEL_ID, DEFAULT_NEGATIVE_PROMPT, TXT_DIM, TXT_LEN, CaptionCache,
                          CaptionEncoder, TextEncoderUnavailable, encode_with_chi_prompt, encoder_cache_key,
                          load_caption_embeds, resolve_caption_embeds, save_caption_embeds)
from pid.captions import gemma
from pid.cli import encode_caption_command
from pid.errors import CaptionEmbedsError

BOS, PAD, OFFSET = 2, 0, 10


def tok_id(ch: str) -> int:
    return ord(ch) + OFFSET


class FakeTokenizer:
    """Character tokens with a BOS, right padding with PAD and right truncation, like Gemma's (in shape)."""

    def __init__(self, padding_side="right"):
        self.padding_side = padding_side
        self.calls = []

    def encode(self, s):
        return [BOS] + [tok_id(c) for c in s]

    def __call__(self, texts, max_length, padding, truncation, return_tensors):
        assert padding == "max_length" and truncation is True and return_tensors == "pt"
        self.calls.append((list(texts), max_length))
        ids = [self.encode(t)[:max_length] for t in texts]
        mask = [[1] * len(i) + [0] * (max_length - len(i)) for i in ids]
        ids = [i + [PAD] * (max_length - len(i)) for i in ids]
        return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}


class FakeModel(torch.nn.Module):
    """Hidden state at position i = [token id, i, attention mask, 0, ...]: says exactly which positions were kept."""

    def __init__(self, dim=8, dtype=torch.float32, as_tuple=False):
        super().__init__()
        self.dim, self.out_dtype, self.as_tuple = dim, dtype, as_tuple
        self.calls = []

    def forward(self, input_ids, attention_mask):
        self.calls.append(tuple(input_ids.shape))
        b, t = input_ids.shape
        h = torch.zeros(b, t, self.dim, dtype=torch.float64)
        h[..., 0] = input_ids.double()
        h[..., 1] = torch.arange(t, dtype=torch.float64)
        h[..., 2] = attention_mask.double()
        h = h.to(self.out_dtype)
        return (h,) if self.as_tuple else types.SimpleNamespace(last_hidden_state=h)


def window(prefix, caption, txt_len=TXT_LEN):
    """What the reference's token window keeps, stated by content for character tokens: BOS, the prefix's last token, then the
    caption's first txt_len-2 tokens, then pad states."""
    body = [tok_id(prefix[-1])] + [tok_id(c) for c in caption][:txt_len - 2]
    return [BOS] + body + [PAD] * (txt_len - 1 - len(body))


# ------------------------------------------------------------------------------------------ CHI prefix
def test_chi_prompt_text():
    lines = CHI_PROMPT.split("\n")
    assert len(lines) == 8
    assert lines[0].startswith('Given a user prompt, generate an "Enhanced prompt" that provides detailed visual')
    assert lines[4].startswith("- User Prompt: A cat sleeping -> Enhanced: A small, fluffy white cat")
    assert lines[7] == "User Prompt: "
    assert CHI_PROMPT.endswith("User Prompt: ") and not CHI_PROMPT.endswith("\n")
    assert CHI_PROMPT == "\n".join(captions.CHI_PROMPT_LINES)
    # pinned from the reference's `_CHI_PROMPT` (identical in all its pid/_src/configs/pid/*/shared_config.py)
    assert len(CHI_PROMPT) == 1057
    assert hashlib.sha256(CHI_PROMPT.encode()).hexdigest() == (
        "62b9ab89eebb0ac5ee4d264bf96bf19d2b81f504bc3852500efeaf5a34d638b1")


def test_constants():
    assert (TXT_LEN, TXT_DIM, DEFAULT_MODEL_ID) == (300, 2304, "Efficient-Large-Model/gemma-2-2b-it")
    assert DEFAULT_NEGATIVE_PROMPT.startswith("low quality, worst quality, over-saturated, three legs")
    assert DEFAULT_NEGATIVE_PROMPT.endswith("plastic skin, jpeg artifacts, watermark")


# ------------------------------------------------------------------------------- token selection rule
def test_window_short_caption_keeps_bos_then_last_299_with_pad_states():
    tok, model = FakeTokenizer(), FakeModel()
    out = encode_with_chi_prompt(tok, model, "a cat")
    n_chi = 1 + len(CHI_PROMPT)
    max_len = n_chi + TXT_LEN - 2
    assert out.shape == (1, TXT_LEN, 8) and out.dtype == torch.float32
    assert tok.calls == [([CHI_PROMPT + "a cat"], max_len)]
    assert model.calls == [(1, max_len)]  # the whole sequence runs
    positions = out[0, :, 1].long().tolist()
    assert positions == [0] + list(range(max_len - 299, max_len))
    assert positions[1] == n_chi - 1  # the window starts at the prefix's last token
    ids = out[0, :, 0].long().tolist()
    assert ids[:7] == [BOS, tok_id(" ")] + [tok_id(c) for c in "a cat"]
    assert ids[7:] == [PAD] * 293  # pad-position states are kept
    assert out[0, :, 2].long().tolist() == [1] * 7 + [0] * 293
    assert ids == window(CHI_PROMPT, "a cat")


def test_window_long_caption_is_truncated():
    caption = "".join(chr(ord("a") + i % 26) for i in range(400))
    out = encode_with_chi_prompt(FakeTokenizer(), FakeModel(), caption)
    ids = out[0, :, 0].long().tolist()
    assert ids == [BOS, tok_id(" ")] + [tok_id(c) for c in caption[:298]]
    assert out[0, :, 2].all()
    # 298 caption tokens fit exactly; one more is cut
    fit = encode_with_chi_prompt(FakeTokenizer(), FakeModel(), caption[:298])
    cut = encode_with_chi_prompt(FakeTokenizer(), FakeModel(), caption[:299])
    assert torch.equal(fit, cut) and fit[0, -1, 2] == 1


def test_window_batch_of_different_lengths():
    captions = ["", "a red fox", "x" * 500]
    tok, model = FakeTokenizer(), FakeModel()
    out = encode_with_chi_prompt(tok, model, captions)
    assert out.shape == (3, TXT_LEN, 8) and len(model.calls) == 1
    for b, caption in enumerate(captions):
        assert out[b, :, 0].long().tolist() == window(CHI_PROMPT, caption)
        assert torch.equal(out[b], encode_with_chi_prompt(FakeTokenizer(), FakeModel(), caption)[0])
    assert out[0, :, 2].long().tolist() == [1, 1] + [0] * 298  # "" = BOS + the prefix's trailing space


@settings(max_examples=60, deadline=None)
@given(prefix=st.text(alphabet="abc :\n", min_size=1, max_size=30),
       captions=st.lists(st.text(alphabet="xyz ", max_size=40), min_size=1, max_size=4),
       txt_len=st.integers(3, 24))
def test_window_rule_property(prefix, captions, txt_len):
    out = encode_with_chi_prompt(FakeTokenizer(), FakeModel(), captions, prefix=prefix, txt_len=txt_len)
    max_len = 1 + len(prefix) + txt_len - 2
    assert out.shape == (len(captions), txt_len, 8)
    for b, caption in enumerate(captions):
        assert out[b, :, 0].long().tolist() == window(prefix, caption, txt_len)
        assert out[b, :, 1].long().tolist() == [0] + list(range(max_len - txt_len + 1, max_len))


def test_no_prefix_keeps_all_300():
    out = encode_with_chi_prompt(FakeTokenizer(), FakeModel(), "hi", prefix="")
    assert out[0, :, 1].long().tolist() == list(range(300))
    assert out[0, :3, 0].long().tolist() == [BOS, tok_id("h"), tok_id("i")]


def test_model_dtype_kept_and_tuple_output():
    out = encode_with_chi_prompt(FakeTokenizer(), FakeModel(dtype=torch.bfloat16, as_tuple=True), ["a", "b"])
    assert out.dtype == torch.bfloat16 and out.shape == (2, 300, 8)
    assert out[:, 0, 0].tolist() == [BOS, BOS]


def test_left_padding_tokenizer_refused():
    with pytest.raises(ValueError, match="right padding"):
        encode_with_chi_prompt(FakeTokenizer(padding_side="left"), FakeModel(), "a")


# ----------------------------------------------------------------------- CaptionEncoder (fake transformers)
@pytest.fixture
def fake_transformers(monkeypatch):
    record = {}

    class AutoTokenizer:
        @staticmethod
        def from_pretrained(model_id, **kw):
            record["tokenizer"] = (model_id, kw)
            return FakeTokenizer(padding_side="left")  # CaptionEncoder must switch it to right

    class CausalLM:
        def get_decoder(self):
            record["get_decoder"] = True
            return FakeModel(dim=TXT_DIM, dtype=torch.bfloat16)

    class AutoModelForCausalLM:
        fail = None

        @staticmethod
        def from_pretrained(model_id, **kw):
            record["model"] = (model_id, kw)
            if AutoModelForCausalLM.fail:
                raise AutoModelForCausalLM.fail
            return CausalLM()

    module = types.ModuleType("transformers")
    module.AutoTokenizer, module.AutoModelForCausalLM = AutoTokenizer, AutoModelForCausalLM
    monkeypatch.setitem(sys.modules, "transformers", module)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    record["module"] = module
    return record


def test_caption_encoder_loads_like_the_reference(fake_transformers, tmp_path):
    enc = CaptionEncoder(cache_dir=tmp_path)
    model_id, kw = fake_transformers["model"]
    assert model_id == DEFAULT_MODEL_ID and kw["torch_dtype"] is torch.bfloat16
    assert kw["local_files_only"] is False and kw["cache_dir"] == str(tmp_path)
    assert "attn_implementation" not in kw  # transformers' default, as the reference
    assert fake_transformers["get_decoder"] and enc.tokenizer.padding_side == "right"
    out = enc.encode(["a", "bb", "ccc"], batch_size=2)
    assert out.shape == (3, TXT_LEN, TXT_DIM) and out.dtype == torch.bfloat16
    assert out[:, 2, 0].tolist() == [tok_id("a"), tok_id("b"), tok_id("c")]
    assert enc.encode("a").shape == (1, TXT_LEN, TXT_DIM)


def test_caption_encoder_offline_env_and_local_folder(fake_transformers, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    CaptionEncoder(tmp_path)
    assert fake_transformers["model"][0] == str(tmp_path)
    assert fake_transformers["tokenizer"][1]["local_files_only"] is True
    assert fake_transformers["model"][1]["local_files_only"] is True


def test_caption_encoder_model_missing_says_how_to_get_it(fake_transformers):
    fake_transformers["module"].AutoModelForCausalLM.fail = OSError("not in cache")
    with pytest.raises(TextEncoderUnavailable) as e:
        CaptionEncoder(local_files_only=True)
    msg = str(e.value)
    assert "pid encode-caption" in msg and "model_id" in msg and "not in cache" in msg


def test_caption_encoder_without_transformers(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(TextEncoderUnavailable, match=r"pip install 'pid-decoder\[text\]'"):
        CaptionEncoder()


def test_encode_caption_command(fake_transformers, tmp_path, caplog):
    out = tmp_path / "embeds.safetensors"
    with caplog.at_level(logging.INFO, logger="pid"):
        path = encode_caption_command(["", DEFAULT_NEGATIVE_PROMPT], str(out))
    assert path == out and "wrote 2 caption embedding(s)" in caplog.text
    embeds, captions = load_caption_embeds(out)
    assert embeds.shape == (2, TXT_LEN, TXT_DIM) and embeds.dtype == torch.bfloat16
    assert captions == ["", DEFAULT_NEGATIVE_PROMPT]


# ------------------------------------------------------------------------------------------- files
def rand_embeds(*shape, dtype=torch.bfloat16):
    return torch.randn(*shape).to(dtype)


def test_file_round_trip_keeps_bf16_and_captions(tmp_path):
    e = rand_embeds(2, TXT_LEN, TXT_DIM)
    path = save_caption_embeds(tmp_path / "e.safetensors", e, ["a dog", "ünïcode ✓"], model_id="m")
    with safe_open(str(path), framework="pt") as f:
        assert list(f.keys()) == ["caption_embeds"]
        meta = f.metadata()
    assert json.loads(meta["pid.captions"]) == ["a dog", "ünïcode ✓"] and meta["pid.text_model_id"] == "m"
    loaded, captions = load_caption_embeds(path)
    assert loaded.dtype == torch.bfloat16 and torch.equal(loaded, e)
    assert captions == ["a dog", "ünïcode ✓"]


def test_file_2d_gets_batch_dim_and_no_captions(tmp_path):
    e = rand_embeds(TXT_LEN, TXT_DIM, dtype=torch.float32)
    save_caption_embeds(tmp_path / "e.safetensors", e)
    loaded, captions = load_caption_embeds(tmp_path / "e.safetensors")
    assert loaded.shape == (1, TXT_LEN, TXT_DIM) and loaded.dtype == torch.float32 and captions is None


def test_foreign_single_tensor_files(tmp_path):
    e = rand_embeds(TXT_LEN, TXT_DIM)
    save_file({"whatever": e}, str(tmp_path / "x.safetensors"))
    loaded, captions = load_caption_embeds(tmp_path / "x.safetensors")
    assert torch.equal(loaded[0], e) and captions is None
    torch.save(e, tmp_path / "x.pt")
    assert torch.equal(load_caption_embeds(tmp_path / "x.pt")[0][0], e)
    torch.save({"caption_embs": e.unsqueeze(0)}, tmp_path / "d.pt")
    assert torch.equal(load_caption_embeds(tmp_path / "d.pt")[0][0], e)


def test_file_errors(tmp_path):
    with pytest.raises(CaptionEmbedsError, match="does not exist"):
        load_caption_embeds(tmp_path / "missing.safetensors")
    save_file({"a": rand_embeds(TXT_LEN, TXT_DIM), "b": rand_embeds(TXT_LEN, TXT_DIM)},
              str(tmp_path / "two.safetensors"))
    with pytest.raises(CaptionEmbedsError, match="2 entries"):
        load_caption_embeds(tmp_path / "two.safetensors")
    save_file({"t": rand_embeds(TXT_LEN, 1024)}, str(tmp_path / "narrow.safetensors"))
    with pytest.raises(CaptionEmbedsError, match=r"\[1, 300, 1024\].*2304"):
        load_caption_embeds(tmp_path / "narrow.safetensors")
    assert load_caption_embeds(tmp_path / "narrow.safetensors", dim=1024)[0].shape == (1, 300, 1024)
    save_file({"t": rand_embeds(77, TXT_DIM)}, str(tmp_path / "short.safetensors"))
    with pytest.raises(CaptionEmbedsError, match="shape"):
        load_caption_embeds(tmp_path / "short.safetensors")
    bad = rand_embeds(TXT_LEN, TXT_DIM)
    bad[3, 4] = float("nan")
    torch.save(bad, tmp_path / "nan.pt")
    with pytest.raises(CaptionEmbedsError, match="NaN"):
        load_caption_embeds(tmp_path / "nan.pt")
    torch.save(torch.zeros(TXT_LEN, TXT_DIM, dtype=torch.int64), tmp_path / "int.pt")
    with pytest.raises(CaptionEmbedsError, match="floating"):
        load_caption_embeds(tmp_path / "int.pt")
    torch.save([bad, bad], tmp_path / "list.pt")
    with pytest.raises(CaptionEmbedsError, match="not a tensor"):
        load_caption_embeds(tmp_path / "list.pt")
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(CaptionEmbedsError, match="not a readable"):
        load_caption_embeds(tmp_path / "junk.safetensors")
    with pytest.raises(ValueError, match="safetensors"):
        save_caption_embeds(tmp_path / "e.pt", rand_embeds(TXT_LEN, TXT_DIM))
    with pytest.raises(ValueError, match="2 captions for 1"):
        save_caption_embeds(tmp_path / "e.safetensors", rand_embeds(TXT_LEN, TXT_DIM), ["a", "b"])


# ------------------------------------------------------------------------------------------- cache
class CountingEncoder:
    """Deterministic per-caption embeddings; records every encode() call."""

    def __init__(self, model_id="fake/model"):
        self.model_id = model_id
        self.calls = []

    @staticmethod
    def value(caption):
        return float(int(hashlib.sha256(caption.encode()).hexdigest()[:4], 16) % 200)

    def encode(self, captions):
        self.calls.append(list(captions))
        return torch.stack([torch.full((TXT_LEN, TXT_DIM), self.value(c)) for c in captions]).to(torch.bfloat16)


def test_cache_hits_skip_the_encoder_and_order_is_kept():
    enc, cache = CountingEncoder(), CaptionCache()
    cache.put(enc.model_id, "b", enc.encode(["b"])[0])
    enc.calls.clear()
    out = cache.encode(enc, ["a", "b", "c", "a"])
    assert enc.calls == [["a", "c"]]  # one batched call, misses only, deduplicated
    assert out.shape == (4, TXT_LEN, TXT_DIM) and out.dtype == torch.bfloat16
    assert out[:, 0, 0].tolist() == [enc.value(c) for c in ["a", "b", "c", "a"]]
    again = cache.encode(enc, ["c", "b", "a"])
    assert enc.calls == [["a", "c"]] and again[:, 0, 0].tolist() == [enc.value(c) for c in "cba"]
    assert cache.get("other/model", "a") is None  # keyed by model too


def test_cache_persists_on_disk(tmp_path):
    enc = CountingEncoder()
    CaptionCache(tmp_path).encode(enc, ["x", "y"])
    key = hashlib.sha256(b"fake/model\0x").hexdigest()
    assert (tmp_path / f"{key}.safetensors").is_file()
    expected = [hashlib.sha256(("fake/model" + "\0" + c).encode()).hexdigest() + ".safetensors" for c in "xy"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(expected)
    enc2 = CountingEncoder()
    out = CaptionCache(tmp_path).encode(enc2, ["y", "x", "z"])
    assert enc2.calls == [["z"]]
    assert out[:, 0, 0].tolist() == [enc.value(c) for c in "yxz"]


def test_cache_ignores_a_corrupt_entry(tmp_path):
    enc = CountingEncoder()
    key = hashlib.sha256(b"fake/model\0x").hexdigest()
    (tmp_path / f"{key}.safetensors").write_bytes(b"garbage")
    out = CaptionCache(tmp_path).encode(enc, "x")
    assert enc.calls == [["x"]] and out.shape == (1, TXT_LEN, TXT_DIM)
    assert CaptionCache(tmp_path).get("fake/model", "x") is not None  # rewritten


def _entry(folder, key, caption):
    return folder / f"{captions.caption_cache_key(key, caption)}.safetensors"


@pytest.mark.parametrize("damage", ["other caption", "other encoder", "two embeddings", "NaN", "other width",
                                    "truncated"])
def test_cache_ignores_a_damaged_entry_with_a_warning(tmp_path, caplog, damage):
    enc = CountingEncoder()
    key = enc.model_id
    file = _entry(tmp_path, key, "x")
    good = rand_embeds(TXT_LEN, TXT_DIM)
    meta = {captions.CACHE_KEY_METADATA_KEY: key}
    if damage == "other caption":
        save_caption_embeds(file, good, ["y"], model_id=None, metadata=meta)
    elif damage == "other encoder":
        save_caption_embeds(file, good, ["x"], model_id=None, metadata={captions.CACHE_KEY_METADATA_KEY: "another"})
    elif damage == "two embeddings":
        save_caption_embeds(file, torch.stack([good, good]), ["x", "x"], model_id=None, metadata=meta)
    elif damage == "NaN":
        save_caption_embeds(file, good, ["x"], model_id=None, metadata=meta)
        raw = bytearray(file.read_bytes())
        raw[-2:] = torch.tensor([float("nan")], dtype=torch.bfloat16).view(torch.uint8).numpy().tobytes()
        file.write_bytes(bytes(raw))
    elif damage == "other width":
        save_caption_embeds(file, rand_embeds(TXT_LEN, 16), ["x"], model_id=None, metadata=meta)
    elif damage == "truncated":
        save_caption_embeds(file, good, ["x"], model_id=None, metadata=meta)
        file.write_bytes(file.read_bytes()[:1000])
    with caplog.at_level(logging.WARNING, logger="pid.captions"):
        out = CaptionCache(tmp_path).encode(enc, ["x"], dim=TXT_DIM)
    assert enc.calls == [["x"]] and out[0, 0, 0] == enc.value("x")  # encoded again, never a failure
    assert "ignoring caption cache entry" in caplog.text and "encoded again" in caplog.text
    assert CaptionCache(tmp_path).get(key, "x", dim=TXT_DIM)[0, 0] == enc.value("x")  # and rewritten


def test_cache_survives_a_folder_it_cannot_write(tmp_path, caplog):
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache folder should be")
    enc, cache = CountingEncoder(), CaptionCache(blocked / "captions")
    with caplog.at_level(logging.WARNING, logger="pid.captions"):
        out = cache.encode(enc, ["x", "y"])
        again = cache.encode(enc, ["x", "y"])
    assert enc.calls == [["x", "y"]] and torch.equal(out, again)  # kept in memory
    assert caplog.text.count("could not write caption cache entry") == 1  # one warning, not one per entry


def test_cache_entries_name_their_encoder_and_caption(tmp_path):
    enc = CountingEncoder()
    CaptionCache(tmp_path).encode(enc, "ünïcode ✓")
    with safe_open(str(_entry(tmp_path, enc.model_id, "ünïcode ✓")), framework="pt") as f:
        meta = f.metadata()
    assert meta[captions.CACHE_KEY_METADATA_KEY] == enc.model_id and json.loads(meta["pid.captions"]) == ["ünïcode ✓"]
    assert "pid.text_model_id" not in meta


def test_encoder_key(tmp_path):
    hub = encoder_cache_key()
    assert hub.startswith(DEFAULT_MODEL_ID + "|bfloat16|chi-") and hub.endswith(f"-{TXT_LEN}")
    assert encoder_cache_key(DEFAULT_MODEL_ID, torch.float32) != hub
    assert gemma._LazyDefaultEncoder().cache_key == hub
    # a local folder: by its absolute path and its files, so a replaced model gets new entries
    (tmp_path / "config.json").write_text("{}")
    folder_key = encoder_cache_key(tmp_path)
    assert folder_key.startswith(f"{tmp_path.resolve()}@") and folder_key == encoder_cache_key(str(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"new weights")
    assert encoder_cache_key(tmp_path) != folder_key
    # pid's prompt rule is part of every key
    assert gemma._PROMPT_TAG == f"chi-{hashlib.sha256(CHI_PROMPT.encode()).hexdigest()[:12]}-300" and \
        gemma._PROMPT_TAG in hub


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("PID_CACHE_DIR", str(tmp_path / "pid"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert captions.default_cache_dir() == tmp_path / "pid" / "captions"
    monkeypatch.delenv("PID_CACHE_DIR")
    assert captions.default_cache_dir() == tmp_path / "xdg" / "pid" / "captions"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # not absolute: ignored, as the XDG specification says
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert captions.default_cache_dir() == tmp_path / "home" / ".cache" / "pid" / "captions"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert captions.default_cache_dir() == tmp_path / "home" / ".cache" / "pid" / "captions"


def test_decoder_caption_cache_argument(monkeypatch, tmp_path, tiny_checkpoint):
    import pid
    from pid.archs import TINY, random_net

    monkeypatch.setenv("PID_CACHE_DIR", str(tmp_path))
    net = random_net(TINY)
    assert pid.PidDecoder(net).caption_cache.folder == tmp_path / "captions"
    assert pid.PidDecoder(net, caption_cache="default").caption_cache.folder == tmp_path / "captions"
    assert pid.PidDecoder(net, caption_cache=None).caption_cache.folder is None  # memory only
    mine = CaptionCache(tmp_path / "mine")
    assert pid.PidDecoder(net, caption_cache=mine).caption_cache is mine
    with pytest.raises(ValueError, match="caption_cache must be 'default'.*CaptionCache.*None"):
        pid.PidDecoder(net, caption_cache=str(tmp_path))
    loaded = pid.load(tiny_checkpoint.safetensors, config=TINY, caption_cache=mine)
    assert loaded.caption_cache is mine


def test_a_cached_caption_decodes_in_another_process_without_transformers(tmp_path, tiny_checkpoint):
    """`pid decode --caption ""` with the entry in the default folder (here written by this process): the command
    neither imports transformers (a stub that refuses to import stands in for it) nor asks for it. (Uncached, it
    asks for it: test_bad_input.py, where transformers is not installed.)"""
    from pid.archs import TINY

    cache_dir = tmp_path / "cache"
    y = torch.randn(TXT_LEN, TINY.txt_embed_dim, generator=torch.Generator().manual_seed(3)).bfloat16()
    CaptionCache(cache_dir / "captions").put(encoder_cache_key(), "", y)
    stub = tmp_path / "stub" / "transformers"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text("raise ImportError('transformers is blocked in this test')\n")
    latent = torch.randn(1, TINY.lq_latent_channels, 2, 3, generator=torch.Generator().manual_seed(4))
    save_file({"latent": latent}, str(tmp_path / "lat.safetensors"))
    env = dict(os.environ, PID_CACHE_DIR=str(cache_dir),
               PYTHONPATH=os.pathsep.join([str(stub.parent), os.environ.get("PYTHONPATH", "")]))
    out = subprocess.run([sys.executable, "-m", "pid", "decode", str(tmp_path / "lat.safetensors"), "--checkpoint",
                          str(tiny_checkpoint.safetensors), "--config", str(tiny_checkpoint.config_json),
                          "--caption", "", "--steps", "1", "--out", str(tmp_path / "out.safetensors")],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    import pid

    expected = pid.load(tiny_checkpoint.safetensors, config=TINY, caption_cache=None).decode(
        latent, caption_embeds=y, steps=1, progress=False)
    from safetensors.torch import load_file

    assert torch.equal(next(iter(load_file(str(tmp_path / "out.safetensors")).values())), expected)


# ------------------------------------------------------------------------------------------ resolving
@pytest.mark.parametrize("shape", [(TXT_LEN, TXT_DIM), (1, TXT_LEN, TXT_DIM)])
def test_resolve_broadcasts_one_embedding(shape):
    e = rand_embeds(*shape)
    out = resolve_caption_embeds(3, caption_embeds=e)
    assert out.shape == (3, TXT_LEN, TXT_DIM) and out.dtype == torch.bfloat16
    assert all(torch.equal(out[b], e.reshape(TXT_LEN, TXT_DIM)) for b in range(3))


def test_resolve_batch_embeds_and_mismatch():
    e = rand_embeds(3, TXT_LEN, TXT_DIM)
    assert torch.equal(resolve_caption_embeds(3, caption_embeds=e), e)
    with pytest.raises(ValueError, match="3 captions for a batch of 2"):
        resolve_caption_embeds(2, caption_embeds=e)
    with pytest.raises(CaptionEmbedsError, match="shape"):
        resolve_caption_embeds(1, caption_embeds=rand_embeds(1, TXT_LEN, 4096))


def test_resolve_precomputed_wins_and_paths_load(tmp_path):
    e = rand_embeds(TXT_LEN, TXT_DIM)
    path = save_caption_embeds(tmp_path / "e.safetensors", e, [""])
    enc = CountingEncoder()
    out = resolve_caption_embeds(2, caption="ignored", caption_embeds=str(path), encoder=enc)
    assert enc.calls == [] and out.shape == (2, TXT_LEN, TXT_DIM) and torch.equal(out[1], e)


def test_resolve_captions_through_encoder_and_cache():
    enc, cache = CountingEncoder(), CaptionCache()
    out = resolve_caption_embeds(4, caption="a cat", encoder=enc, cache=cache)
    assert enc.calls == [["a cat"]] and out.shape == (4, TXT_LEN, TXT_DIM)
    out = resolve_caption_embeds(2, caption=["a cat", "a dog"], encoder=enc, cache=cache)
    assert enc.calls == [["a cat"], ["a dog"]]
    assert out[:, 0, 0].tolist() == [enc.value("a cat"), enc.value("a dog")]
    with pytest.raises(ValueError, match="3 captions for a batch of 2"):
        resolve_caption_embeds(2, caption=["a", "b", "c"], encoder=enc)


def test_resolve_default_encoder_is_lazy(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    cache = CaptionCache()
    cache.put(encoder_cache_key(), "", rand_embeds(TXT_LEN, TXT_DIM))  # the default encoder's key
    assert resolve_caption_embeds(2, caption="", cache=cache).shape == (2, TXT_LEN, TXT_DIM)  # no Gemma needed
    with pytest.raises(TextEncoderUnavailable, match=r"pid-decoder\[text\]"):
        resolve_caption_embeds(1, caption="a cat", cache=cache)


def test_resolve_without_caption_or_embeds_says_both_ways_out():
    with pytest.raises(ValueError) as e:
        resolve_caption_embeds(1)
    msg = str(e.value)
    for needle in ("caption_embeds=", "pid encode-caption", "pid-decoder[text]", "caption=", 'caption=""', "empty caption"):
        assert needle in msg


def test_cache_memory_is_bounded():
    class Encoder:
        model_id, calls = "bounded", []

        def encode(self, captions):
            Encoder.calls.append(list(captions))
            return torch.stack([torch.full((TXT_LEN, 8), float(len(c))) for c in captions])

    cache = CaptionCache(max_in_memory=2)
    out = cache.encode(Encoder(), ["a", "bb", "ccc", "a"])  # more distinct captions than memory keeps
    assert [float(e[0, 0]) for e in out] == [1.0, 2.0, 3.0, 1.0] and len(cache) == 2
    assert Encoder.calls == [["a", "bb", "ccc"]]
    cache.encode(Encoder(), ["ccc"])  # the most recent ones are kept: no new call
    assert len(Encoder.calls) == 1
