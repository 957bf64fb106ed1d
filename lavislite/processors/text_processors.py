"""BLIP text cleaning: ``blip_caption`` (pre_caption + prompt) and ``blip_question`` (pre_question).

Both default to BLIP's exact behaviour, where a "word" is whatever ``str.split(" ")`` yields. With
``word_tokenizer="spacy"`` the cleaning is the same but words are counted with spaCy's tokenizer and
punctuation/whitespace tokens do not count: ``"red,green,blue,cat"`` is 1 word for BLIP but 4 for spaCy
(and ``"hello , world"`` is 3 for BLIP, 2 for spaCy); truncation cuts the cleaned text right after the
last kept word, so ``max_words`` really bounds the number of words. spaCy splits clitics, so
``"dog's"`` counts as 2 words. spaCy uses a blank English pipeline (``spacy.blank("en")``, tokenizer
only, loaded on first use and cached) unless ``spacy_model`` names an installed trained pipeline.
"""

from __future__ import annotations

import functools
import re
from typing import Any

from lavislite.common.errors import ConfigError, DataError
from lavislite.common.registry import registry
from lavislite.processors.base_processor import BaseProcessor

_PUNCT = re.compile(r"([.!\"()*#:;~])")
_MULTI_SPACE = re.compile(r"\s{2,}")
WORD_TOKENIZERS = ("whitespace", "spacy")


def pre_caption(caption: str, max_words: int = 50) -> str:
    """BLIP's ``pre_caption``: lower-case, punctuation -> space, collapse whitespace runs, strip, truncate."""
    caption = _PUNCT.sub(" ", caption.lower())
    caption = _MULTI_SPACE.sub(" ", caption)
    caption = caption.rstrip("\n").strip(" ")
    return _truncate_whitespace(caption, max_words)


def pre_question(question: str, max_words: int = 50) -> str:
    """BLIP's ``pre_question``: lower-case, delete punctuation, rstrip spaces, truncate."""
    question = _PUNCT.sub("", question.lower()).rstrip(" ")
    return _truncate_whitespace(question, max_words)


def _truncate_whitespace(text: str, max_words: int) -> str:
    words = text.split(" ")
    return " ".join(words[:max_words]) if len(words) > max_words else text


@functools.lru_cache(maxsize=4)
def _spacy_nlp(model: str | None) -> Any:
    import spacy

    if model is None:
        return spacy.blank("en")
    try:
        return spacy.load(model)  # only its tokenizer is used (make_doc), so no pipe ever runs
    except OSError as exc:
        raise ConfigError(
            f"spaCy pipeline {model!r} is not installed ({exc}). Install it (python -m spacy download {model}) "
            f"or leave spacy_model unset to use a blank English tokenizer."
        ) from exc


def truncate_words_spacy(text: str, max_words: int, model: str | None = None) -> str:
    """Keep the first ``max_words`` spaCy word tokens of ``text`` (punctuation tokens do not count);
    the text is cut right after the last kept word."""
    count = 0
    for tok in _spacy_nlp(model).make_doc(text):
        if tok.is_punct or tok.is_space:
            continue
        count += 1
        if count == max_words:
            return text[: tok.idx + len(tok.text)]
    return text


class _BlipTextProcessor(BaseProcessor):
    """Shared by both text processors: input checks and the word-count/truncation backend."""

    kind = "text"

    def __init__(self, max_words: int = 50, word_tokenizer: str = "whitespace", spacy_model: str | None = None) -> None:
        if isinstance(max_words, bool) or not isinstance(max_words, int) or max_words < 1:
            raise ConfigError(f"{type(self).__name__}: max_words must be a positive int, got {max_words!r}")
        if word_tokenizer not in WORD_TOKENIZERS:
            raise ConfigError(f"{type(self).__name__}: word_tokenizer must be one of {WORD_TOKENIZERS}, got {word_tokenizer!r}")
        self.max_words, self.word_tokenizer, self.spacy_model = max_words, word_tokenizer, spacy_model

    def _clean(self, text: str, max_words: int) -> str:
        raise NotImplementedError

    def _process(self, text: Any) -> str:
        if not isinstance(text, str):
            raise DataError(f"{type(self).__name__}: expected a {self.kind} string, got {type(text).__name__} {text!r:.80}")
        if self.word_tokenizer == "spacy":
            out = self._clean(text, len(text) + 1)  # clean only; spaCy does the truncation
            out = truncate_words_spacy(out, self.max_words, self.spacy_model)
        else:
            out = self._clean(text, self.max_words)
        if not out.strip():
            raise DataError(f"{type(self).__name__}: the {self.kind} {text!r:.80} is empty after cleaning; fix or drop this annotation")
        return out


@registry.register_processor("blip_caption")
class BlipCaptionProcessor(_BlipTextProcessor):
    """``prompt + pre_caption(caption, max_words)`` (BLIP's caption cleaning)."""

    kind = "caption"

    def __init__(self, prompt: str = "", max_words: int = 50, word_tokenizer: str = "whitespace", spacy_model: str | None = None) -> None:
        super().__init__(max_words, word_tokenizer, spacy_model)
        if not isinstance(prompt, str):
            raise ConfigError(f"BlipCaptionProcessor: prompt must be a string, got {prompt!r}")
        self.prompt = prompt

    def _clean(self, text: str, max_words: int) -> str:
        return pre_caption(text, max_words)

    def __call__(self, caption: str) -> str:
        return self.prompt + self._process(caption)


@registry.register_processor("blip_question")
class BlipQuestionProcessor(_BlipTextProcessor):
    """``pre_question(question, max_words)`` (BLIP's question cleaning)."""

    kind = "question"

    def _clean(self, text: str, max_words: int) -> str:
        return pre_question(text, max_words)

    def __call__(self, question: str) -> str:
        return self._process(question)
