"""Token counting before tokenize: exact with a tokenizer file, else the labelled estimate."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from tokenizers import Tokenizer

from corpusmix.stages.tokencount import (
    FEATURES,
    TOKENS_PER_BYTE,
    coefficients,
    count_raw,
    count_tokens,
    counter_for,
    features,
)

from .conftest import GPT2


def test_features_count_classes_words_digit_runs_and_lines_per_text():
    texts = pa.array(["Hello, world 42\nab", "cd", "", "é 7"])
    got = {name: features(texts)[:, i].tolist() for i, name in enumerate(FEATURES)}
    assert got == {"letters": [12, 2, 0, 0], "digits": [2, 0, 0, 1], "spaces": [2, 0, 0, 1],
                   "other_whitespace": [1, 0, 0, 0], "punctuation": [1, 0, 0, 0], "non_ascii": [0, 0, 0, 2],
                   "words": [3, 1, 0, 0], "digit_runs": [1, 0, 0, 1], "lines": [1, 0, 0, 0]}
    # a run that continues across two texts counts in both; a slice reads its own rows only
    assert features(pa.array(["ab", "cd", "ef"]).slice(1, 2))[:, FEATURES.index("words")].tolist() == [1, 1]
    chunked = pa.chunked_array([pa.array(["ab 1"]), pa.array(["x"])])
    assert features(chunked)[:, FEATURES.index("letters")].tolist() == [2, 1]


def _loaded(make_spec, **overrides):
    from corpusmix.core.spec import load_spec

    from .conftest import CORPUS

    return load_spec(make_spec([{"name": "math", "kind": "math", "paths": [str(CORPUS / "math" / "*.jsonl.gz")]}],
                               **overrides))


def test_exact_counting_is_the_tokenizers_own_length_with_the_encoder_tokenize_uses(make_spec):
    long = "word " * 40_000 + "\n" + "x" * 70_000  # cut into pieces as tokenize cuts it
    texts = pa.array(["Hello world", "数学 and code: x = 1", "", long])
    counting, info = counter_for(_loaded(make_spec))
    tok = Tokenizer.from_file(str(GPT2))
    assert counting.exact and counting.describe().startswith("exact") and info.encoder == "tiktoken"
    assert count_tokens(texts, counting, info).tolist() == [len(tok.encode(t).ids) for t in texts.to_pylist()]
    # quarantined records from raw bytes; one held by its head only is scaled to its size
    raw = count_raw([(b"abc def", 7), (b"abc def", 70)], counting, info)
    assert raw[1] == 10 * raw[0]


def test_the_estimate_is_labelled_and_interpolates_between_fitted_vocabulary_sizes(make_spec):
    small, large = sorted(TOKENS_PER_BYTE)
    mid = int(np.sqrt(small * large))
    c = coefficients(mid)
    for i in range(len(FEATURES)):  # halfway in log2 between the two fitted sizes
        assert abs(c[i] - (TOKENS_PER_BYTE[small][i] + TOKENS_PER_BYTE[large][i]) / 2) < 1e-9
    assert coefficients(small // 4) == TOKENS_PER_BYTE[small]  # outside: the nearest fitted size
    counting, info = counter_for(_loaded(make_spec, tokenizer={"train": {"vocab_size": mid}}))
    assert info is None
    assert not counting.exact and counting.as_dict()["method"] == "estimate"
    assert "estimate" in counting.describe() and f"{mid:,}" in counting.describe()
    n = count_tokens(pa.array(["The quick brown fox jumps over the lazy dog. " * 20]), counting, None)
    assert 150 < n[0] < 300  # ~10 words and 2 punctuation marks per sentence, 20 sentences
