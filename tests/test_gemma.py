"""Caption encoding with transformers' real Gemma-2 classes: a tiny random `Gemma2ForCausalLM` and a small BPE
tokenizer with Gemma's special tokens, built here in a second and saved to a folder, so that `CaptionEncoder` loads
them through the AutoTokenizer / AutoModelForCausalLM path the released model takes. No download.

What is checked against values computed here: the token ids the model receives and the kept window (BOS + the last
299 of the padded / truncated CHI prefix + caption), the layer and dtype of the states (the decoder's output after
its final norm, bf16), the cache (a hit never runs or loads the model, across processes), and the release policy
(the default encoder exists only while a request's cache misses are encoded)."""

import gc
import sys
import weakref

import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

import pid  # noqa: E402
from pid.captions import gemma  # noqa: E402
from pid.archs import TINY, random_net  # noqa: E402
from pid.captions import (CHI_PROMPT, DEFAULT_NEGATIVE_PROMPT, TXT_LEN, CaptionCache, CaptionEncoder,  # noqa: E402
                      encoder_cache_key)

PAD, EOS, BOS, UNK = 0, 1, 2, 3  # Gemma's ids
HIDDEN = TINY.txt_embed_dim  # the tiny decoder's caption width, so the embeddings can drive a decode
SHORT = "a red fox in the snow"
LONG = " ".join(["a small red fox sleeping in the deep snow under a tall green tree"] * 30)  # > 299 tokens
TRAINING_TEXT = [CHI_PROMPT, SHORT, LONG, DEFAULT_NEGATIVE_PROMPT]


def _raw_tokenizer():
    """A byte-pair tokenizer in Gemma's manner: spaces as "▁" glued to the next word, BOS prepended, no EOS;
    <pad> 0, <eos> 1, <bos> 2, <unk> 3 as in Gemma's vocabulary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="never")
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"],
                                  show_progress=False)
    tok.train_from_iterator(TRAINING_TEXT, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", BOS)])
    return tok


@pytest.fixture(scope="module")
def gemma_dir(tmp_path_factory):
    raw = _raw_tokenizer()
    folder = tmp_path_factory.mktemp("tiny_gemma")
    transformers.PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<bos>", eos_token="<eos>",
                                         pad_token="<pad>", unk_token="<unk>",
                                         padding_side="right").save_pretrained(folder)
    config = transformers.Gemma2Config(
        vocab_size=raw.get_vocab_size(), hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16, sliding_window=64, max_position_embeddings=1024,
        pad_token_id=PAD, eos_token_id=EOS, bos_token_id=BOS)
    torch.manual_seed(0)
    model = transformers.Gemma2ForCausalLM(config)
    with torch.no_grad():
        model.model.norm.weight.normal_()  # (zero-initialised) so the final norm's scale shows in the states
    model.to(torch.bfloat16).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def encoder(gemma_dir):
    return CaptionEncoder(gemma_dir, local_files_only=True)


@pytest.fixture
def runs(encoder):
    """The inputs of every forward call of the encoder's model, as (input_ids, attention_mask)."""
    calls = []
    handle = encoder.model.register_forward_pre_hook(
        lambda module, args, kwargs: calls.append((kwargs["input_ids"], kwargs["attention_mask"])), with_kwargs=True)
    yield calls
    handle.remove()


def expected_sequence(caption):
    """The reference's tokenization, computed with the raw tokenizer: N_chi = tokens of the prefix (BOS included),
    max_len = N_chi + 298, prefix + caption right-truncated / right-padded to max_len; the kept positions."""
    raw = _raw_tokenizer()
    n_chi = len(raw.encode(CHI_PROMPT).ids)
    max_len = n_chi + TXT_LEN - 2
    ids = raw.encode(CHI_PROMPT + caption).ids[:max_len]
    mask = [1] * len(ids) + [0] * (max_len - len(ids))
    ids = ids + [PAD] * (max_len - len(ids))
    keep = [0] + list(range(max_len - (TXT_LEN - 1), max_len))
    return ids, mask, keep


def caption_tokens(caption):
    """The caption's own tokens as they follow the prefix's trailing space (which merges into the first word)."""
    return _raw_tokenizer().encode(" " + caption, add_special_tokens=False).ids


# ---------------------------------------------------------------------------------------- the tokenizer
def test_the_tokenizer_is_gemma_shaped(encoder):
    tok = encoder.tokenizer
    assert (tok.pad_token_id, tok.eos_token_id, tok.bos_token_id, tok.unk_token_id) == (PAD, EOS, BOS, UNK)
    assert tok.padding_side == "right"
    assert tok.encode(CHI_PROMPT)[0] == BOS and EOS not in tok.encode(CHI_PROMPT)
    assert UNK not in tok.encode(CHI_PROMPT + SHORT) and UNK not in tok.encode(CHI_PROMPT + DEFAULT_NEGATIVE_PROMPT)
    # The reference's intended case: the prefix's trailing space is its own token alone, merged with the caption's first
    # word after it, so the window starts at the caption.
    alone = tok.convert_ids_to_tokens(tok.encode(CHI_PROMPT))
    joint = tok.convert_ids_to_tokens(tok.encode(CHI_PROMPT + SHORT))
    assert alone[-1] == "▁" and joint[len(alone) - 1] == "▁a"


# ------------------------------------------------------------------------------------- the token window
@pytest.mark.parametrize("caption", [SHORT, LONG, ""], ids=["short-padded", "long-truncated", "empty"])
def test_the_model_sees_the_reference_sequence_and_the_window_keeps_bos_and_the_last_299(encoder, runs, caption):
    ids, mask, keep = expected_sequence(caption)
    out = encoder.encode(caption)
    assert len(runs) == 1
    input_ids, attention_mask = runs[0]
    assert input_ids.tolist() == [ids] and attention_mask.tolist() == [mask]
    kept = [ids[i] for i in keep]
    assert len(kept) == TXT_LEN == out.shape[1]
    tokens = caption_tokens(caption) if caption else []
    if caption == SHORT:  # padding: BOS, the caption, then pad positions (whose states are kept too)
        assert mask.count(0) > 0
        assert kept == [BOS] + tokens + [PAD] * (TXT_LEN - 1 - len(tokens))
    elif caption == LONG:  # truncation: BOS, then the caption's first 299 tokens
        assert len(tokens) > TXT_LEN and all(mask)
        assert kept == [BOS] + tokens[:TXT_LEN - 1]
    else:  # "no caption": BOS, the prefix's trailing space, pads
        assert kept == [BOS, _raw_tokenizer().token_to_id("▁")] + [PAD] * (TXT_LEN - 2)


def test_states_are_the_decoders_final_norm_output_in_bf16(gemma_dir, encoder):
    """The decoder (`get_decoder()`: a Gemma2Model, no LM head) after its final norm, at the kept positions; equal
    to running the released model class here on the same ids."""
    assert type(encoder.model).__name__ == "Gemma2Model"
    assert {p.dtype for p in encoder.model.parameters()} == {torch.bfloat16}
    seen = {}
    handle = encoder.model.norm.register_forward_hook(lambda m, args, out: seen.update(before=args[0], after=out))
    try:
        out = encoder.encode([SHORT, LONG])
    finally:
        handle.remove()
    assert out.shape == (2, TXT_LEN, HIDDEN) and out.dtype == torch.bfloat16
    keep = expected_sequence(SHORT)[2]
    assert torch.equal(out, seen["after"][:, keep])
    assert not torch.allclose(out.float(), seen["before"][:, keep].float(), atol=1e-2)  # not the un-normed states

    # loaded as the reference does, in bf16 (a float32 load cast with .to() would also cast RoPE's frequencies)
    dtype = {gemma._dtype_argument(transformers): torch.bfloat16}  # `torch_dtype`, renamed `dtype` in 4.56
    mine = transformers.Gemma2ForCausalLM.from_pretrained(gemma_dir, **dtype).eval()
    rows = [expected_sequence(c) for c in (SHORT, LONG)]
    with torch.no_grad():
        hidden = mine.model(input_ids=torch.tensor([r[0] for r in rows]),
                            attention_mask=torch.tensor([r[1] for r in rows])).last_hidden_state
    assert hidden.dtype == torch.bfloat16
    assert torch.equal(out, hidden[:, keep])


# ------------------------------------------------------------------------------------------- the cache
def test_a_cache_hit_never_runs_the_model_in_this_process_or_the_next(encoder, runs, tmp_path):
    first = CaptionCache(tmp_path).encode(encoder, ["", SHORT, ""])
    assert len(runs) == 1 and runs[0][0].shape[0] == 2  # the distinct misses, in one batch
    again = CaptionCache(tmp_path).encode(encoder, [SHORT, ""])  # another process: the same folder
    assert len(runs) == 1
    assert again.dtype == torch.bfloat16 and torch.equal(again, first[[1, 0]])
    assert torch.equal(first[0], encoder.encode("")[0])  # the entry is what the encoder gives


def test_the_key_names_the_folder_and_dtype(gemma_dir, encoder):
    assert encoder.cache_key == encoder_cache_key(gemma_dir, torch.bfloat16)
    assert str(gemma_dir.resolve()) in encoder.cache_key and "bfloat16" in encoder.cache_key
    assert encoder_cache_key(gemma_dir, torch.float32) != encoder.cache_key


class Spy:
    """Replaces `pid.captions.gemma.CaptionEncoder` to record (weakly) every encoder pid creates."""

    def __init__(self, monkeypatch, gemma_dir):
        self.made = []
        spy = self

        class Recorded(CaptionEncoder):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                spy.made.append((weakref.ref(self), weakref.ref(self.model), self.device))

        monkeypatch.setattr(gemma, "CaptionEncoder", Recorded)
        monkeypatch.setattr(gemma._LazyDefaultEncoder, "model_id", str(gemma_dir))  # the default encoder: the tiny one

    def alive(self):
        gc.collect()
        return [ref() for ref, _, _ in self.made if ref() is not None] + \
               [model() for _, model, _ in self.made if model() is not None]


def _latent():
    return torch.randn(1, TINY.lq_latent_channels, 2, 3, generator=torch.Generator().manual_seed(0))


def test_the_default_encoder_is_made_on_a_miss_on_the_decoders_device_and_released(monkeypatch, gemma_dir, tmp_path):
    spy = Spy(monkeypatch, gemma_dir)
    decoder = pid.PidDecoder(random_net(TINY), caption_cache=CaptionCache(tmp_path))
    during = []
    sample = decoder._sample
    monkeypatch.setattr(decoder, "_sample", lambda *a, **k: during.append(len(spy.alive())) or sample(*a, **k))
    guided = dict(sampler="dpm++2m", steps=1, cfg_scale=3.0, progress=False)  # caption + the negative prompt
    first = decoder.decode(_latent(), caption=SHORT, **guided)
    assert len(spy.made) == 1 and spy.made[0][2] == decoder.device  # one encoder for both captions
    assert during == [0]  # released before the sampling ran: nothing kept the encoder or its weights
    assert spy.alive() == []
    assert len(list(tmp_path.iterdir())) == 2

    # A new process (a new decoder and cache on the same folder), without transformers: no encoder at all.
    monkeypatch.setitem(sys.modules, "transformers", None)
    fresh = pid.PidDecoder(decoder.net, caption_cache=CaptionCache(tmp_path))
    assert torch.equal(fresh.decode(_latent(), caption=SHORT, **guided), first)
    assert len(spy.made) == 1


def test_the_default_cache_folder_serves_the_empty_caption_across_decoders(monkeypatch, gemma_dir, tmp_path):
    monkeypatch.setenv("PID_CACHE_DIR", str(tmp_path))
    spy = Spy(monkeypatch, gemma_dir)
    net = random_net(TINY)
    first = pid.PidDecoder(net).decode(_latent(), caption="", steps=1, progress=False)
    assert len(spy.made) == 1 and spy.alive() == []
    assert [p.parent for p in tmp_path.rglob("*.safetensors")] == [tmp_path / "captions"]
    again = pid.PidDecoder(net).decode(_latent(), caption="", steps=1, progress=False)
    assert len(spy.made) == 1 and torch.equal(first, again)


def test_a_users_encoder_is_left_where_it_is(monkeypatch, gemma_dir, encoder, runs):
    spy = Spy(monkeypatch, gemma_dir)
    params = [p.data_ptr() for p in encoder.model.parameters()]
    decoder = pid.PidDecoder(random_net(TINY), caption_cache=None)
    decoder.decode(_latent(), caption=SHORT, text_encoder=encoder, steps=1, progress=False)
    assert len(runs) == 1 and spy.made == []  # the user's encoder ran; no default one was made
    assert encoder.device == torch.device("cpu") and encoder.model is not None
    assert [p.data_ptr() for p in encoder.model.parameters()] == params  # not moved, not freed


def test_an_encoder_session_releases_what_it_made(monkeypatch, gemma_dir, encoder):
    spy = Spy(monkeypatch, gemma_dir)
    with gemma.encoder_session(None, "cpu") as session:
        assert session.encoder is None  # nothing loaded before a miss
        assert session.encode([SHORT]).shape == (1, TXT_LEN, HIDDEN)
        assert session.encoder is not None and len(spy.made) == 1
    assert session.encoder is None and spy.alive() == []  # dropped at the block's end, the session still referenced
    with gemma.encoder_session(encoder, "cpu") as session:
        assert session is encoder
    assert encoder.model is not None
