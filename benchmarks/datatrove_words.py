"""Imported only inside the benchmark venv (.bench-venv), where datatrove is installed.

``datatrove_language(kind)``: what to pass as datatrove's ``language`` so that it splits
words either with its default (spaCy's blank "en" tokenizer) or, for "split", exactly as
corpusmix does (``str.split``), which separates tokenisation from the rules themselves.
"""

from __future__ import annotations


def datatrove_language(kind: str):
    if kind == "spacy":
        return "en"
    from datatrove.utils.word_tokenizers import WordTokenizer

    class SplitTokenizer(WordTokenizer):
        """str.split: corpusmix's word split."""

        def word_tokenize(self, text: str) -> list[str]:
            return text.split()

        def sent_tokenize(self, text: str) -> list[str]:
            raise NotImplementedError

        def span_tokenize(self, text: str) -> list[tuple[int, int]]:
            raise NotImplementedError

    return SplitTokenizer("en")
