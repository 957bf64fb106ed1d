"""The served heads and their batched operations.

A head is any registered model that satisfies one contract, so a new model family serves without server
changes:

* captioner: ``generate({"image": x}, num_beams=, max_length=, min_length=) -> list[str]`` (a ``prompt``
  attribute, if present, lets requests give their own prompt);
* VQA: ``predict_answers({"image": x, "text_input": questions}, inference_method="generate", ...)``;
* retrieval: ``encode_image``, ``encode_text``, ``itm_logits`` (match, classification, search).

Each operation takes a list of request items and returns one result per item; :mod:`lavislite.serve.batching`
calls it with whatever requests arrived together.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lavislite.common.errors import ConfigError
from lavislite.serve.identity import LoadedModel, ModelSpec, load_spec
from lavislite.serve.search import Searcher, can_rerank, classify

logger = logging.getLogger(__name__)

CONTRACTS = {
    "caption": ("generate",),
    "vqa": ("predict_answers",),
    "retrieval": ("encode_image", "encode_text", "itm_logits"),
}


def check_contract(role: str, lm: LoadedModel) -> None:
    missing = [m for m in CONTRACTS[role] if not hasattr(lm.model, m)]
    if missing:
        raise ConfigError(f"--{role} {lm.spec.model_arg} lacks {', '.join(missing)} (the {role} contract); "
                          f"pick a model that has it (`lavislite models` lists them)")


@dataclass
class Heads:
    """The loaded heads (any may be None) and the index searcher."""

    caption: LoadedModel | None = None
    vqa: LoadedModel | None = None
    retrieval: LoadedModel | None = None
    searcher: Searcher | None = None
    decode: dict[str, Any] = field(default_factory=lambda: {"num_beams": 3, "max_length": 30, "min_length": 5})

    def names(self) -> list[str]:
        """The API operations these heads serve."""
        out = []
        if self.caption:
            out.append("caption")
        if self.vqa:
            out.append("vqa")
        if self.retrieval:
            out += ["match", "classify"]
        if self.searcher:
            out.append("search")
        return out

    # -- batched operations ------------------------------------------------------------------
    def caption_batch(self, items: list[tuple[Any, str | None]]) -> list[str]:
        """``(PIL image, prompt or None)`` -> caption; requests sharing a prompt share a generate call."""
        lm = self.caption
        out: list[str | None] = [None] * len(items)
        groups: dict[str | None, list[int]] = {}
        for i, (_, prompt) in enumerate(items):
            groups.setdefault(prompt, []).append(i)
        for prompt, idx in groups.items():
            x = lm.images([items[i][0] for i in idx])
            default = getattr(lm.model, "prompt", None)
            decode = dict(self.decode)
            try:
                if prompt is not None:  # the request's prompt replaces the model's for this call (one worker thread per head)
                    before = lm.model.prompt_length
                    lm.model.prompt = prompt if prompt.endswith(" ") else prompt + " "
                    grown = lm.model.prompt_length - before  # lengths count the prompt: keep the caption's own budget
                    decode.update(max_length=decode["max_length"] + grown, min_length=decode["min_length"] + grown)
                with torch.inference_mode():
                    caps = lm.model.generate({"image": x}, **decode)
            finally:
                if prompt is not None:
                    lm.model.prompt = default
            for i, c in zip(idx, caps):
                out[i] = c.strip()
        return out  # type: ignore[return-value]

    def vqa_batch(self, items: list[tuple[Any, str]]) -> list[str]:
        """``(PIL image, question)`` -> the generated answer."""
        lm = self.vqa
        x = lm.images([im for im, _ in items])
        with torch.inference_mode():
            return lm.model.predict_answers({"image": x, "text_input": [lm.txt(q) for _, q in items]},
                                            inference_method="generate", num_beams=3, max_len=10, min_len=1)

    def match_batch(self, items: list[tuple[Any, str]]) -> list[dict[str, float]]:
        """``(PIL image, text)`` -> ``{itm, itm_prob?, itc}``: the ITM match logit, its probability when the
        model exposes both ITM logits, and the ITC cosine."""
        lm = self.retrieval
        model = lm.model
        x = lm.images([im for im, _ in items])
        with torch.inference_mode():
            tokens, iproj = model.encode_image(x)
            tproj, ids, atts = model.encode_text([lm.txt(t) for _, t in items])
            itc = (torch.nn.functional.normalize(iproj.float(), dim=-1) * torch.nn.functional.normalize(tproj.float(), dim=-1)).sum(-1)
            if hasattr(model, "itm_hidden") and hasattr(model, "itm_head"):
                two = model.itm_head(model.itm_hidden(tokens, ids, atts)).float()
                itm, prob = two[:, 1], two.softmax(-1)[:, 1]
            else:
                itm, prob = model.itm_logits(tokens, ids, atts).float(), None
        out = []
        for i in range(len(items)):
            rec = {"itm": float(itm[i]), "itc": float(itc[i])}
            if prob is not None:
                rec["itm_prob"] = float(prob[i])
            out.append(rec)
        return out

    def classify_batch(self, items: list[tuple[Any, tuple[str, ...], bool, str]]) -> list[list[dict[str, Any]]]:
        """``(PIL image, labels, rerank, template)`` -> labels best first; one call per distinct label set."""
        out: list[Any] = [None] * len(items)
        groups: dict[tuple, list[int]] = {}
        for i, (_, labels, rerank, template) in enumerate(items):
            groups.setdefault((labels, rerank, template), []).append(i)
        for (labels, rerank, template), idx in groups.items():
            res = classify(self.retrieval, [items[i][0] for i in idx], list(labels), rerank=rerank, template=template)
            for i, r in zip(idx, res):
                out[i] = r
        return out

    def search_batch(self, items: list[tuple[str, Any, int, int]]) -> list[list[dict[str, Any]]]:
        """``("text", query, k, rerank_k)`` or ``("image", PIL image, k, 0)`` -> hits; like requests share a call."""
        out: list[Any] = [None] * len(items)
        groups: dict[tuple, list[int]] = {}
        for i, (kind, _, k, rk) in enumerate(items):
            groups.setdefault((kind, k, rk), []).append(i)
        for (kind, k, rk), idx in groups.items():
            queries = [items[i][1] for i in idx]
            res = self.searcher.text_to_image(queries, k, rk) if kind == "text" else self.searcher.image_to_image(queries, k)
            for i, r in zip(idx, res):
                out[i] = r
        return out


# -- loading -----------------------------------------------------------------------------------
def demo_specs(demo_dir: str | Path) -> dict[str, ModelSpec]:
    """Specs of the caption, VQA and retrieval models a ``lavislite demo`` run trained: each stage's newest run
    folder's model folder (``runs/<stage>/<run_id>/model/``), or, for runs from before model folders, its
    ``config.yaml`` and weights file."""
    import yaml

    from lavislite.models.folder import find

    root = Path(demo_dir)
    out = {}
    for role, stage in (("caption", "caption"), ("vqa", "vqa"), ("retrieval", "retrieval")):
        runs = sorted((root / "runs" / stage).glob("*/config.yaml"))
        if not runs:
            continue
        run = runs[-1].parent
        try:
            folder = find(run)
        except ConfigError:  # the run wrote no model folder (it did not finish): nothing to serve for this role
            continue
        if folder is not None:
            out[role] = ModelSpec.from_args(str(folder))
            continue
        weights = next((run / n for n in ("model_weights.pth", "checkpoint_best.pth") if (run / n).is_file()), None)
        if weights is None:
            continue
        model = dict(yaml.safe_load(runs[-1].read_text(encoding="utf-8"))["model"])
        name, mtype = model.pop("arch"), model.pop("model_type")
        tokenizer = model.pop("tokenizer", None)
        for key in ("checkpoint", "pretrained", "finetuned", "load_pretrained", "load_finetuned"):
            model.pop(key, None)
        options = tuple(f"{k}={_flow(v)}" for k, v in sorted(model.items()))
        out[role] = ModelSpec(name, mtype, str(weights), str(tokenizer) if tokenizer else None, options)
    return out


def _flow(value: Any) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()


def newest_demo_dir(base: str | Path = "output/demo") -> Path | None:
    """The newest ``lavislite demo`` output folder under ``base`` that trained anything, or None."""
    found = sorted(p.parent.parent for p in Path(base).glob("*/runs/*")) if Path(base).is_dir() else []
    return found[-1] if found else None


def load_heads(specs: dict[str, ModelSpec], *, index: str | None = None, device: str | None = None, dtype: str = "auto") -> Heads:
    """Load each role's model once (a model serving two roles is loaded once) and the index's searcher.
    Without a ``retrieval`` spec the index's own model serves match/classify too."""
    cache: dict[ModelSpec, LoadedModel] = {}

    def get(spec: ModelSpec) -> LoadedModel:
        if spec not in cache:
            logger.info("loading %s", spec.label)
            cache[spec] = load_spec(spec, device, dtype)
        return cache[spec]

    heads = Heads()
    for role in ("caption", "vqa", "retrieval"):
        if role in specs:
            lm = get(specs[role])
            check_contract(role, lm)
            setattr(heads, role, lm)
    if index:
        from lavislite.serve.index import ImageIndex

        idx = ImageIndex.open(index)
        spec = ModelSpec.from_json(idx.model)
        lm = heads.retrieval if heads.retrieval and heads.retrieval.digest == idx.model.get("digest") else get(spec)
        heads.searcher = Searcher.open(idx, lm)
        if heads.retrieval is None and can_rerank(lm.model):
            heads.retrieval = lm
    return heads
