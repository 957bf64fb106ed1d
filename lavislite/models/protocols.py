"""The contracts between tasks (and the inference layer) and models, as ``typing.Protocol`` classes.

A task, the ``lavislite`` commands and the search code call a model only through these methods, so a
model family is usable by a task as soon as it has the methods that task needs; nothing checks its class.
Each task declares the protocols it needs (``BaseTask.requires``) and :func:`require` checks them when
the task is started, naming the missing method and the model class: a model that cannot do the job
fails before any data is read, not in the middle of an evaluation.

* :class:`Captioner`: ``generate(samples, ...) -> list[str]``.
* :class:`VQAModel`: ``predict_answers(samples, ...) -> list[str]`` (answer ranking over an answer list,
  or generation) and ``visual_tokens(image)``, the tokens ``predict_answers`` reads from
  ``samples["image_embeds"]`` (how a video's frames reach the model: their tokens concatenated).
* :class:`RetrievalModel`: ``encode_image``, ``encode_text``, ``itc_similarity``, ``itm_logits``. The model
  owns its similarity: BLIP has one ITC vector per image (a cosine), a model with several vectors per
  image (BLIP-2's 32 query vectors) takes the max over them inside ``itc_similarity``; callers keep the
  features opaque, indexed by their first dimension.
* :class:`FeatureExtractor`: ``extract_features(samples, mode)``.

docs/models.md#model-contracts documents them for people adding a model family.
"""

from __future__ import annotations

import inspect
from typing import Any, Iterable, Protocol, Sequence, runtime_checkable

import torch
from torch import Tensor

from lavislite.common.errors import ConfigError

__all__ = ["Captioner", "FeatureExtractor", "RetrievalModel", "VQAModel", "missing_methods", "require"]


@runtime_checkable
class Captioner(Protocol):
    """A model that writes captions."""

    def generate(
        self,
        samples: dict,
        use_nucleus_sampling: bool = False,
        num_beams: int = 3,
        max_length: int = 30,
        min_length: int = 10,
        top_p: float = 0.9,
        repetition_penalty: float = 1.0,
        num_captions: int = 1,
        generator: torch.Generator | None = None,
    ) -> list[str]:
        """``num_captions`` captions per ``samples["image"]`` (B, 3, H, W), grouped per image; ``generator``
        seeds nucleus sampling."""
        ...


@runtime_checkable
class VQAModel(Protocol):
    """A model that answers questions about an image (or about a video's frames)."""

    def predict_answers(
        self,
        samples: dict,
        num_beams: int = 3,
        inference_method: str = "rank",
        max_len: int = 10,
        min_len: int = 1,
        num_ans_candidates: int = 128,
        answer_list: Sequence[str] | None = None,
    ) -> list[str]:
        """One answer per ``samples["text_input"]`` question.

        The visual side is ``samples["image"]`` (B, 3, H, W), or ``samples["image_embeds"]`` (B, N, D):
        tokens from :meth:`visual_tokens`, possibly several frames' tokens concatenated along N.
        ``inference_method="rank"`` returns the best of ``answer_list`` (the model ranks the candidates:
        ``num_ans_candidates`` kept after its first filter); ``"generate"`` decodes with ``num_beams``
        beams, ``min_len`` to ``max_len`` tokens.
        """
        ...

    def visual_tokens(self, image: Tensor) -> Tensor:
        """The visual tokens (B, N, D) of ``image`` (B, 3, H, W) that ``predict_answers`` accepts as
        ``samples["image_embeds"]``."""
        ...


@runtime_checkable
class RetrievalModel(Protocol):
    """A model that ranks images against texts: ITC similarity, re-scored by an ITM head."""

    def encode_image(self, image: Tensor) -> tuple[Tensor, Tensor]:
        """``(image_tokens, image_feats)`` of ``image`` (B, 3, H, W).

        ``image_tokens`` (B, N, D) is what :meth:`itm_logits` cross-attends to; ``image_feats`` (B, ...) is
        the ITC side, opaque to callers except for its first dimension: one unnormalised vector per image
        (B, E) for BLIP, several (B, Q, E) for a model that keeps several. Callers may average it over a
        video's frames (dimension 1 of a (B, T, ...) view) and concatenate batches along dimension 0.
        """
        ...

    def encode_text(self, texts: Sequence[str], max_length: int = 35) -> tuple[Tensor, Tensor, Tensor]:
        """``(text_feats (T, ...), input_ids (T, L), attention_mask (T, L))``: the ITC side of each text
        (opaque like ``image_feats``) and the token ids :meth:`itm_logits` takes back (``padding="max_length"``,
        truncated at ``max_length``)."""
        ...

    def itc_similarity(self, image_feats: Tensor, text_feats: Tensor) -> Tensor:
        """The ITC similarity (n_img, n_txt) float32 of every image with every text (BLIP: the cosine,
        no temperature; several vectors per image: the max over them). Rankings use this order."""
        ...

    def itm_logits(
        self, image_tokens: Tensor, input_ids: Tensor, attention_mask: Tensor, image_atts: Tensor | None = None
    ) -> Tensor:
        """ITM "match" logits (b*r,) of ``r`` texts per image, the texts grouped contiguously per image
        (``input_ids``/``attention_mask`` rows from :meth:`encode_text`; trailing padding columns may be
        cut off). ``image_atts`` (b, N) masks image tokens; None means all of them."""
        ...


@runtime_checkable
class FeatureExtractor(Protocol):
    """A model that returns unimodal and multimodal features."""

    def extract_features(self, samples: dict, mode: str = "multimodal") -> Any:
        """Features of ``mode`` (``"image"``, ``"text"`` or ``"multimodal"``) of ``samples["image"]`` and/or
        ``samples["text_input"]``; an object with ``image_embeds``, ``image_embeds_proj`` (normalised),
        ``text_embeds``, ``text_embeds_proj`` (normalised) and ``multimodal_embeds`` (None where not computed)."""
        ...


def _protocol_methods(protocol: type) -> list[str]:
    return [n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_")]


def _unaccepted(method: Any, reference: Any) -> list[str]:
    """The parameters of ``reference`` (a protocol method) that ``method`` cannot take by keyword."""
    try:
        params = inspect.signature(method).parameters
    except (TypeError, ValueError):  # a builtin or C extension: nothing to check
        return []
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return []
    wanted = [n for n in inspect.signature(reference).parameters if n != "self"]
    ok = {n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    positional = [n for n, p in params.items() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    first = positional[0] if positional else None  # the data argument (samples, image, texts, ...) may be named freely
    return [n for i, n in enumerate(wanted) if n not in ok and not (i == 0 and first is not None)]


def missing_methods(model: Any, protocols: Iterable[type]) -> list[str]:
    """``"Protocol.method"`` (or ``"Protocol.method(param)"``) for each part of ``protocols`` that ``model`` lacks."""
    out: list[str] = []
    for protocol in protocols:
        for name in _protocol_methods(protocol):
            method = getattr(model, name, None)
            if not callable(method):
                out.append(f"{protocol.__name__}.{name}")
                continue
            bad = _unaccepted(method, getattr(protocol, name))
            if bad:
                out.append(f"{protocol.__name__}.{name}({', '.join(bad)})")
    return out


def require(model: Any, protocols: Iterable[type], *, by: str, hint: str = "") -> None:
    """Raise :class:`ConfigError` unless ``model`` has every method (and keyword parameter) of ``protocols``.

    ``by`` names who needs them, e.g. ``"task 'retrieval'"`` or ``"lavislite retrieve"``; ``hint`` says what
    to use instead (default: a pointer to the contracts' documentation). A DDP wrapper is looked through.
    """
    model = getattr(model, "module", model)
    missing = missing_methods(model, protocols)
    if missing:
        name = model.__name__ if isinstance(model, type) else type(model).__name__
        hint = hint or "pick a model with these methods or add them (see docs/models.md#model-contracts)"
        raise ConfigError(f"{by} needs {', '.join(missing)}, which model class {name} does not have; {hint}")
