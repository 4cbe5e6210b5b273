import numpy as np
import pytest
import torch

from edgetune.backends import FeatureCache
from edgetune.data import Example, Template
from edgetune.errors import LabelWordError, ModelError

TEMPLATE = Template("{text} In summary, it was {mask}")
WORDS = ["bad", "great"]
TEXTS = ["a wonderful film", "dull", "terrible acting and a bad story , truly awful in every way", "fine"]


def test_features_shapes_and_query_count(make_backend, kind):
    be = make_backend(kind)
    f = be.features([Example(t) for t in TEXTS], TEMPLATE, WORDS)
    assert f.scores.shape == (4, 2) and f.hidden.shape == (4, 32)
    assert f.queries == 4 and f.cache_hits == 0
    assert np.isfinite(f.scores).all() and np.isfinite(f.hidden).all()


def test_batching_and_padding_do_not_change_features(make_backend, kind):
    """Length-sorted, padded batches give the same numbers as one prompt at a time."""
    batched = make_backend(kind, batch_size=4).features([Example(t) for t in TEXTS], TEMPLATE, WORDS)
    single = make_backend(kind, batch_size=1).features([Example(t) for t in TEXTS], TEMPLATE, WORDS)
    np.testing.assert_allclose(batched.scores, single.scores, atol=1e-4)
    np.testing.assert_allclose(batched.hidden, single.hidden, atol=1e-4)


def test_causal_scores_equal_the_full_models_next_token_logits(make_backend, tokenizer):
    be = make_backend("causal")
    f = be.features([Example(t) for t in TEXTS], TEMPLATE, WORDS)
    ids = be.check_label_words(WORDS)
    for i, text in enumerate(TEXTS):
        enc = be._ids(TEMPLATE.render(Example(text)).text_before)
        with torch.no_grad():
            out = be.model(input_ids=torch.tensor([enc]), output_hidden_states=True)
        np.testing.assert_allclose(f.scores[i], out.logits[0, -1, ids].numpy(), atol=1e-4)
        np.testing.assert_allclose(f.hidden[i], out.hidden_states[-1][0, -1].numpy(), atol=1e-4)


def test_masked_scores_are_read_at_the_mask(make_backend, tokenizer):
    be = make_backend("masked")
    f = be.features([Example("a fine film")], Template("{text} It was {mask} ."), WORDS)
    enc = tokenizer("a fine film It was [MASK] .", return_tensors="pt")
    pos = int((enc.input_ids[0] == tokenizer.mask_token_id).nonzero())
    with torch.no_grad():
        logits = be.model(**enc).logits[0, pos, be.check_label_words(WORDS)]
    np.testing.assert_allclose(f.scores[0], logits.numpy(), atol=1e-4)


def test_cache_makes_repeats_free_and_survives_reopening(make_backend, tmp_path):
    path = tmp_path / "f.sqlite"
    be = make_backend("causal", cache=FeatureCache(path))
    first = be.features([Example(t) for t in TEXTS], TEMPLATE, WORDS)
    again = be.features([Example(t) for t in TEXTS + TEXTS[:1]], TEMPLATE, WORDS)
    assert (first.queries, again.queries, again.cache_hits) == (4, 0, 5)
    np.testing.assert_array_equal(first.scores, again.scores[:4])
    reopened = make_backend("causal", cache=FeatureCache(path))
    assert reopened.features([Example(t) for t in TEXTS], TEMPLATE, WORDS).queries == 0
    # Different label words, template or weights are different content: they are queried.
    assert reopened.features([Example(TEXTS[0])], TEMPLATE, ["bad", "good"]).queries == 1
    assert reopened.features([Example(TEXTS[0])], Template("{text} Overall: {mask}"), WORDS).queries == 1
    other = make_backend("causal", seed=1, cache=FeatureCache(path))
    assert other.features([Example(TEXTS[0])], TEMPLATE, WORDS).queries == 1


def test_duplicate_prompts_are_queried_once(make_backend):
    f = make_backend("causal").features([Example("same")] * 3, TEMPLATE, WORDS)
    assert f.queries == 1 and f.cache_hits == 2 and len(f) == 3


def test_multi_token_label_word_is_a_clear_error_where_only_single_tokens_are_scored(make_backend):
    be = make_backend("masked")
    with pytest.raises(LabelWordError, match=r"label word 'unbelievableness' is \d tokens .* tiny-masked"):
        be.features([Example("x")], TEMPLATE, ["bad", "unbelievableness"])
    with pytest.raises(LabelWordError, match=r"is \d tokens"):  # input-edge methods ask for single tokens
        make_backend("causal").check_label_words(["bad", "unbelievableness"])


def _brute_mean_logprob(be, text: str, word: str) -> float:
    """Mean log-probability of the word's tokens after the prompt, by one full forward pass per label."""
    prompt = be._ids(TEMPLATE.render(Example(text)).text_before)
    toks = be._word_ids(word)
    with torch.no_grad():
        logp = torch.log_softmax(be.model(input_ids=torch.tensor([prompt + toks])).logits[0], -1)
    return float(np.mean([float(logp[len(prompt) - 1 + t, tok]) for t, tok in enumerate(toks)]))


@pytest.mark.parametrize("batch_size,label_rows", [(4, 256), (1, 2)])
def test_label_names_of_several_tokens_are_scored_as_sequences(make_backend, batch_size, label_rows):
    """Mixed-length label names: each score is the mean log-probability of the name's tokens after the prompt,
    equal to scoring prompt + name in full, whatever the batching (the shared cache changes nothing)."""
    words = ["bad", "unbelievableness", "transfer money", "card arrival today"]
    be = make_backend("causal", batch_size=batch_size)
    be.label_rows = label_rows
    assert [len(q) for q in be.label_targets(words)] != [1] * 4
    f = be.features([Example(t) for t in TEXTS], TEMPLATE, words)
    assert f.scores.shape == (4, 4) and f.queries == 4  # still one query per prompt
    for i, text in enumerate(TEXTS):
        want = [_brute_mean_logprob(be, text, w) for w in words]
        np.testing.assert_allclose(f.scores[i], want, atol=1e-4)
    single = make_backend("causal").features([Example(t) for t in TEXTS], TEMPLATE, WORDS)
    np.testing.assert_allclose(f.hidden, single.hidden, atol=1e-4)  # the prompt's hidden state, as before


def test_label_names_that_tokenise_alike_or_are_too_long_are_clear_errors(make_backend):
    be = make_backend("causal")
    with pytest.raises(LabelWordError, match="the same tokens"):
        be.features([Example("x")], TEMPLATE, ["card arrival", "Card Arrival"])  # an uncased vocabulary
    with pytest.raises(LabelWordError, match="longer than 32 tokens"):
        be.features([Example("x")], TEMPLATE, ["bad", " ".join(["word"] * 40)])


def test_causal_template_must_end_with_mask(make_backend):
    with pytest.raises(LabelWordError, match="must come last"):
        make_backend("causal").features([Example("x")], Template("{mask} : {text}"), WORDS)


def test_long_input_is_truncated_not_the_template(make_backend):
    be = make_backend("causal", max_length=24)
    long = " ".join(["word"] * 200)
    with pytest.warns(UserWarning, match="truncated"):
        f = be.features([Example(long), Example("short")], TEMPLATE, WORDS)
    assert f.truncated == 1
    enc, n, cut = be._encode(TEMPLATE.render(Example(long)))
    assert cut and n <= 24
    assert be.tokenizer.decode(enc).endswith("in summary, it was")


def test_device_choice(make_backend, monkeypatch):
    """Auto picks a CUDA GPU when torch sees one, else the CPU; a named CUDA device that is absent is one
    clear error, not a stack trace from deep inside torch."""
    import torch

    from edgetune.backends.local import resolve_device
    from edgetune.errors import ModelError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(None) == torch.device("cpu") == resolve_device("auto")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ModelError, match="no CUDA GPU"):
        resolve_device("cuda:0")
    with pytest.raises(ModelError, match="unknown device"):
        resolve_device("tpu-ish")
    be = make_backend("causal", device="cpu")
    assert be.device == torch.device("cpu") and next(be.model.parameters()).device == be.device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device(None) == torch.device("cuda")


class _BagOfWordsEncoder:
    """A stand-in for a SentenceTransformer: hashed bag of words, L2-normalised (deterministic, no weights)."""

    tokenizer = None

    def encode(self, texts, batch_size=64, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False):
        out = np.zeros((len(texts), 16), dtype=np.float32)
        for i, text in enumerate(texts):
            for w in text.lower().split():
                out[i, sum(map(ord, w)) % 16] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def test_embedding_scores_are_scaled_cosines_and_the_scale_is_part_of_the_identity():
    from edgetune.backends import EmbeddingBackend
    from edgetune.backends.embedding import describe_label

    examples = [Example(t) for t in TEXTS]
    cache = FeatureCache(None)
    scaled = EmbeddingBackend(_BagOfWordsEncoder(), "bow", "bow@1", cache=cache, progress=False)
    raw = EmbeddingBackend(_BagOfWordsEncoder(), "bow", "bow@1", cache=cache, progress=False, scale=1.0)
    f20, f1 = scaled.features(examples, TEMPLATE, WORDS), raw.features(examples, TEMPLATE, WORDS)
    enc = _BagOfWordsEncoder()
    cos = enc.encode(TEXTS) @ enc.encode([describe_label(TEMPLATE, w) for w in WORDS]).T
    assert np.abs(cos).max() > 0  # the check below is not vacuous
    np.testing.assert_allclose(f1.scores, cos, atol=1e-6)
    np.testing.assert_allclose(f20.scores, 20 * cos, atol=1e-5)
    # both asked the encoder: one shared cache never hands one scale's scores to the other
    assert f20.queries == f1.queries == len(TEXTS)
    assert scaled.identity != raw.identity and scaled.settings()["scale"] == 20.0
    with pytest.raises(ModelError, match="scale"):
        EmbeddingBackend(enc, "bow", "bow@1", scale=0.0)
