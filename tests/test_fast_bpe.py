"""The tiktoken fast path: the same ids as the tokenizers library on the whole shared corpus, refused
where its model is narrower than the tokenizer file, and guarded during the build."""

from __future__ import annotations

import dataclasses
import gzip
import json

import orjson
import pytest

from corpusmix.stages import fast_bpe
from corpusmix.stages.tokenizer import choose_encoder, describe, load_tokenizer, train_bpe

from .conftest import CORPUS, GPT2


def _corpus_texts(limit_per_file: int | None = None) -> list[str]:
    texts = []
    for f in sorted(CORPUS.glob("*/*.jsonl.gz")):
        with gzip.open(f) as fh:
            for i, line in enumerate(fh):
                if limit_per_file is not None and i >= limit_per_file:
                    break
                texts.append(orjson.loads(line)["text"])
    return texts


@pytest.mark.slow  # every document of the corpus, twice
def test_gpt2_gives_the_same_ids_as_tokenizers_on_every_document_of_the_corpus():
    texts = _corpus_texts()
    assert sum(map(len, texts)) > 50_000_000  # all six sources, every document
    assert fast_bpe.incompatibility(json.loads(GPT2.read_bytes())) is None
    ref = load_tokenizer(str(GPT2)).encode_batch_fast(texts, add_special_tokens=False)
    fast = fast_bpe.encode(str(GPT2), texts)
    differ = [i for i, (want, got) in enumerate(zip(ref, fast)) if want.ids != got.tolist()]
    assert len(fast) == len(texts) and differ == []
    # added tokens inside the text are matched as the tokenizers library matches them
    text = "a<|endoftext|>b <|endoftext|><|endoftext|>\n"
    assert fast_bpe.encode(str(GPT2), [text])[0].tolist() == load_tokenizer(str(GPT2)).encode(text).ids
    assert choose_encoder(GPT2, "auto")[0] == "tiktoken"
    assert choose_encoder(GPT2, "huggingface")[0] == "huggingface"


def test_a_trained_tokenizer_takes_the_fast_path_and_agrees_on_unseen_text(tmp_path):
    texts = _corpus_texts(limit_per_file=60)
    tok = train_bpe(iter(texts[::2]), 3000, ["<|endoftext|>", "<|pad|>"], 2)
    path = tmp_path / "tokenizer.json"
    tok.save(str(path))
    assert choose_encoder(path, "auto")[0] == "tiktoken"
    unseen = texts[1::2]
    assert ([x.tolist() for x in fast_bpe.encode(str(path), unseen)]
            == [e.ids for e in tok.encode_batch(unseen, add_special_tokens=False)])


def _edited_gpt2(tmp_path, edit) -> tuple[dict, str]:
    tj = json.loads(GPT2.read_bytes())
    edit(tj)
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(tj))
    return tj, str(path)


def _swap_merges(tj):
    tj["model"]["merges"][10], tj["model"]["merges"][11] = tj["model"]["merges"][11], tj["model"]["merges"][10]


@pytest.mark.parametrize("edit, fragment", [
    (lambda tj: tj.update(normalizer={"type": "NFC"}), "normalizer"),
    (lambda tj: tj["pre_tokenizer"].update(add_prefix_space=True), "pre-tokenizer"),
    (lambda tj: tj["added_tokens"][0].update(lstrip=True), "lstrip"),
    (lambda tj: tj["model"].update(dropout=0.1), "dropout"),
    (_swap_merges, "out of id order"),
    (lambda tj: tj["model"]["vocab"].update({"zzzq": 50257}), "neither a byte"),
])
def test_tokenizers_outside_the_fast_model_are_refused_with_the_reason(tmp_path, edit, fragment):
    tj, path = _edited_gpt2(tmp_path, edit)
    why = fast_bpe.incompatibility(tj)
    assert why is not None and fragment in why


def _the_tokenizer(tmp_path):
    """Byte-level BPE whose merges are in id order but where 't' + 'he' is never merged, although 'the'
    exists (made from 'th' + 'e'): the static checks pass, and tiktoken, which merges any adjacent pair
    whose bytes are a token, would give 'the' where the tokenizers library gives 't', 'he'."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {s: i for i, s in enumerate(sorted(fast_bpe._symbol_to_byte(), key=fast_bpe._symbol_to_byte().get))}
    for tok in ("he", "th", "the"):
        vocab[tok] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[("h", "e"), ("t", "h"), ("th", "e")]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>"])
    path = tmp_path / "the.json"
    tok.save(str(path))
    return path


def test_a_tokenizer_that_passes_the_static_checks_but_not_the_probes_falls_back(tmp_path):
    path = _the_tokenizer(tmp_path)
    assert fast_bpe.incompatibility(json.loads(path.read_bytes())) is None
    assert load_tokenizer(str(path)).encode("the").ids != fast_bpe.encode(str(path), ["the"])[0].tolist()
    encoder, why = choose_encoder(path, "auto")
    assert encoder == "huggingface" and "probe" in why


def test_the_build_stops_when_the_spot_check_sees_a_difference(tmp_path):
    """Forced onto tiktoken anyway, the tokenize stage refuses to write its ids."""
    path = _the_tokenizer(tmp_path)
    info = dataclasses.replace(describe(path, "<|endoftext|>", "huggingface"), encoder="tiktoken")
    with pytest.raises(ValueError, match="tokenizer.encoder: huggingface"):
        info.encode_pieces(["other words first"] * fast_bpe.SPOT_CHECK_EVERY + ["the end"] * 3)
    # the spot check looks at one piece in SPOT_CHECK_EVERY: here the first, which agrees
    ids, n_pieces = info.encode_pieces(["no t-h-e here"] + ["the"] * 5)
    assert n_pieces == [1] * 6 and len(ids) == 6


def test_texts_go_to_the_threads_in_order_in_runs_of_about_equal_size():
    texts = [f"doc {i} " * (1 + i % 7) for i in range(1000)]
    runs = fast_bpe._runs(texts, 64)
    assert [t for run in runs for t in run] == texts  # nothing lost, nothing reordered
    target = sum(map(len, texts)) // 64
    assert 60 <= len(runs) <= 65 and max(sum(map(len, run)) for run in runs) < 1.1 * target
    with_huge = fast_bpe._runs(texts + ["x" * 50_000], 64)  # one text larger than a run stays whole
    assert [t for run in with_huge for t in run] == texts + ["x" * 50_000]
    assert fast_bpe._runs([], 4) == [] and fast_bpe._runs(["a"], 4) == [["a"]]
