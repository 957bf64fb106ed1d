"""BLIP VQA (``blip_vqa``): a question encoder grounded in the image and an answer decoder grounded in the
question.

* ``text_encoder`` encodes the question ([ENC] first, ``padding='longest'``, max 35 tokens) with
  cross-attention to the image tokens.
* ``text_decoder`` generates / scores answers ([DEC] first) with cross-attention to the *question* states,
  so its ``encoder_width`` is the text hidden size (768), whatever the ViT width.

Inference follows the original exactly (generate: all-ones question mask; rank: first-token top-k, then
label-smoothed LM loss of the k candidates, score = -loss) but never repeats question states: candidate and
beam rows are grouped contiguously per question and use the MED's grouped cross-attention.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lavislite.common.errors import ConfigError, DataError
from lavislite.common.registry import registry
from lavislite.models.blip.base import BlipBase
from lavislite.models.generation import generate
from lavislite.models.med import BertLMHeadModel, BertModel, MedConfig
from lavislite.models.outputs import BlipOutput

logger = logging.getLogger(__name__)

_MAX_CACHED_ANSWER_LISTS = 4


@registry.register_model("blip_vqa")
class BlipVQA(BlipBase):
    """BLIP visual question answering.

    Training: ``model(samples)`` with ``image``, ``text_input`` (questions), ``answer`` (flat list over the
    batch), ``weight`` (one per answer), ``n_answers`` (answers per question) -> ``BlipOutput(loss, loss_lm)``.
    Inference: :meth:`predict_answers` (``inference_method="rank"`` over an answer list, or ``"generate"``).
    """

    PRETRAINED_MODEL_CONFIG_DICT = {
        "vqav2": "models/blip/blip_vqa_vqav2.yaml",
        "okvqa": "models/blip/blip_vqa_okvqa.yaml",
        "aokvqa": "models/blip/blip_vqa_aokvqa.yaml",
        "tiny": "models/blip/blip_vqa_tiny.yaml",
    }

    def __init__(
        self,
        visual_encoder: torch.nn.Module,
        vision_width: int,
        med_config: MedConfig,
        tokenizer: Any = "bert-base-uncased",
        max_question_length: int = 35,
        label_smoothing: float = 0.1,
    ) -> None:
        super().__init__(tokenizer)
        self.visual_encoder = visual_encoder
        self.text_encoder = BertModel(med_config.replace(encoder_width=vision_width), add_pooling_layer=False)
        # the answer decoder attends to the question states: its key/value width is the text width (the
        # original keeps encoder_width=768 from med_config.json even for ViT-L)
        self.text_decoder = BertLMHeadModel(med_config.replace(encoder_width=med_config.hidden_size))
        self.max_question_length = int(max_question_length)
        self.label_smoothing = float(label_smoothing)
        # tokenized answer lists: key (answers tuple, device) -> (ids, mask); see _tokenized_answers
        self._answer_cache: OrderedDict[tuple, tuple[Tensor, Tensor]] = OrderedDict()
        self._clamp_warned: set[tuple[int, int]] = set()

    @classmethod
    def from_config(cls, cfg: Any, tokenizer: Any = None) -> "BlipVQA":
        return cls.build_and_load(cfg, lambda: cls(**cls.config_kwargs(cfg, tokenizer)))

    # -- encoders ----------------------------------------------------------------------------
    def visual_tokens(self, image: Tensor) -> Tensor:
        """ViT tokens (B, N, D) of ``image`` (B, 3, H, W): what :meth:`predict_answers` takes as
        ``samples['image_embeds']`` (a video's frames: their tokens concatenated along N)."""
        if not isinstance(image, Tensor) or image.dim() != 4:
            shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
            raise DataError(f"visual_tokens needs a (B, 3, H, W) image tensor, got {shape}")
        return self.visual_encoder(image.to(self.device))

    def _image_embeds(self, samples: dict) -> Tensor:
        if samples.get("image_embeds") is not None:
            embeds = samples["image_embeds"]
            if embeds.dim() != 3:
                raise DataError(f"samples['image_embeds'] must be (B, N, D) image tokens, got shape {tuple(embeds.shape)}")
            return embeds.to(self.device)
        if samples.get("image") is None:
            raise DataError("BlipVQA needs samples['image'] (B,3,H,W) or samples['image_embeds'] (B,N,D); neither was given")
        return self.visual_tokens(samples["image"])

    def encode_question(self, samples: dict) -> tuple[Tensor, Tensor]:
        """Question states (B, L, H) and the question padding mask (B, L): [ENC] first, padding longest,
        truncated to ``max_question_length``; cross-attending to every image token."""
        questions = samples.get("text_input")
        if questions is None:
            raise DataError("BlipVQA needs samples['text_input'] (the questions, list[str])")
        if isinstance(questions, str):
            questions = [questions]
        image_embeds = self._image_embeds(samples)
        if len(questions) != image_embeds.shape[0]:
            raise DataError(f"{len(questions)} questions for {image_embeds.shape[0]} images; give one question per image")
        ids, mask = self.tokenize(
            questions, padding="longest", max_length=self.max_question_length, first_token=self.tokenizer.enc_token_id
        )
        states = self.text_encoder(ids, mask, encoder_hidden_states=image_embeds).last_hidden_state
        return states, mask

    # -- training ----------------------------------------------------------------------------
    def forward(self, samples: dict) -> BlipOutput:
        """Answer-weighted LM loss: ``sum(weight_i * loss_i) / batch`` (loss_i summed over tokens, smoothing 0.1)."""
        for key in ("answer", "weight", "n_answers"):
            if samples.get(key) is None:
                raise DataError(f"BlipVQA training needs samples[{key!r}]; the VQA datasets' collater gives answer, weight and n_answers")
        states, q_mask = self.encode_question(samples)
        batch = states.shape[0]
        n_answers = torch.as_tensor(samples["n_answers"], device=self.device).long()
        answers = list(samples["answer"])
        weights = torch.as_tensor(samples["weight"], device=self.device, dtype=states.dtype)
        if n_answers.numel() != batch or int(n_answers.sum()) != len(answers) or weights.numel() != len(answers):
            raise DataError(
                f"VQA batch: {batch} questions, n_answers={n_answers.tolist()} (sum {int(n_answers.sum())}), "
                f"{len(answers)} answers, {weights.numel()} weights; n_answers must sum to the number of answers and weights"
            )
        ids, a_mask = self._tokenize_answers(answers)
        labels = ids.masked_fill(ids == self.tokenizer.pad_token_id, -100)
        if bool((n_answers == n_answers[0]).all()):
            # rows are grouped contiguously per question: grouped cross-attention, no repeat
            enc_states, enc_mask = states, q_mask
        else:
            enc_states = states.repeat_interleave(n_answers, dim=0)
            enc_mask = q_mask.repeat_interleave(n_answers, dim=0)
        out = self.text_decoder(
            ids, a_mask, encoder_hidden_states=enc_states, encoder_attention_mask=enc_mask,
            labels=labels, reduction="none", label_smoothing=self.label_smoothing, return_logits=False,
        )
        loss = (weights * out.loss).sum() / batch
        return BlipOutput(loss=loss, loss_lm=loss)

    def example_samples(self, batch_size: int = 2) -> dict[str, Any]:
        """A random batch for ``forward`` (see BaseModel.example_samples)."""
        answers = [["red", "blue"] if i % 2 == 0 else ["two"] for i in range(batch_size)]
        return {"image": self.example_images(batch_size), "text_input": self.example_texts(batch_size),
                "answer": [a for group in answers for a in group],
                "weight": [1.0 / len(group) for group in answers for _ in group], "n_answers": [len(g) for g in answers]}

    def _tokenize_answers(self, answers: Sequence[str]) -> tuple[Tensor, Tensor]:
        # original: padding='longest', no truncation; cut only at the position limit, which no answer reaches
        tok = self.tokenizer(
            list(answers), padding="longest", truncation=True,
            max_length=self.text_decoder.config.max_position_embeddings, return_tensors="pt",
        )
        ids = tok.input_ids.to(self.device)
        ids[:, 0] = self.tokenizer.bos_token_id
        return ids, tok.attention_mask.to(self.device)

    # -- inference ---------------------------------------------------------------------------
    @torch.inference_mode()
    def predict_answers(
        self,
        samples: dict,
        num_beams: int = 3,
        inference_method: str = "rank",
        max_len: int = 10,
        min_len: int = 1,
        num_ans_candidates: int = 128,
        answer_list: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """One answer per question. ``rank``: the best of ``answer_list`` (first-token top-k, then LM
        re-scoring); ``generate``: beam search. Unknown keyword arguments are ignored (LAVIS compatibility)."""
        if inference_method not in ("rank", "generate"):
            raise ConfigError(f"inference_method={inference_method!r}; use 'rank' (needs answer_list) or 'generate'")
        if inference_method == "rank":
            if answer_list is None:
                raise ConfigError("inference_method='rank' needs answer_list (the candidate answers, e.g. the dataset's answer_list.json)")
            if isinstance(answer_list, str) or len(answer_list) == 0:
                raise ConfigError(f"answer_list must be a non-empty list of answer strings, got {answer_list!r:.80}")
            if int(num_ans_candidates) < 1:
                raise ConfigError(f"num_ans_candidates={num_ans_candidates}; use an integer >= 1")
        states, q_mask = self.encode_question(samples)
        if inference_method == "generate":
            return self.generate_answers(states, num_beams=num_beams, max_len=max_len, min_len=min_len)
        ids, mask = self._tokenized_answers(answer_list)
        topk_ids, scores = self.rank_answers(states, q_mask, ids, mask, num_ans_candidates)
        best = topk_ids.gather(1, scores.argmax(dim=1, keepdim=True)).squeeze(1)
        return [answer_list[i] for i in best.tolist()]

    def generate_answers(self, question_states: Tensor, num_beams: int = 3, max_len: int = 10, min_len: int = 1) -> list[str]:
        """Decoded answers of :meth:`generate_answer_ids` (``skip_special_tokens``, no slicing)."""
        ids = self.generate_answer_ids(question_states, num_beams=num_beams, max_len=max_len, min_len=min_len)
        # transformers 4.15 (the original) cleaned up tokenization spaces by default
        return self.tokenizer.batch_decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True)

    def generate_answer_ids(self, question_states: Tensor, num_beams: int = 3, max_len: int = 10, min_len: int = 1) -> Tensor:
        """Beam search from [DEC] to [SEP] on the question states, the question mask all ones (original
        quirk). Beams stay grouped per question, so the cross-attention K/V are computed once per question."""
        tok = self.tokenizer
        bos = torch.full((question_states.shape[0], 1), tok.bos_token_id, dtype=torch.long, device=question_states.device)

        def step(input_ids: Tensor, past: Any) -> tuple[Tensor, Any]:
            out = self.text_decoder(
                input_ids,
                encoder_hidden_states=question_states if past is None else None,
                past_key_values=past, use_cache=True, logits_last_only=True,
            )
            return out.logits[:, -1], out.past_key_values

        return generate(
            step, self.text_decoder.reorder_cache, bos,
            eos_token_id=tok.sep_token_id, pad_token_id=tok.pad_token_id,
            num_beams=num_beams, max_length=max_len, min_length=min_len,
        )

    def rank_answers(
        self, question_states: Tensor, question_atts: Tensor, answer_ids: Tensor, answer_atts: Tensor, k: int
    ) -> tuple[Tensor, Tensor]:
        """BLIP's ``rank_answer``: returns (topk_ids (B, k) indices into the answer list, scores (B, k)).

        The first-token probabilities of all candidates select ``k`` per question; each is scored by
        ``-loss`` (label-smoothed token CE summed over the answer tokens and [SEP]). The [DEC] position runs
        once per question (cached); the ``B*k`` candidate rows run grouped per question on its cache (no
        repeated question states), in a few decoder calls by length (little padding), the vocabulary
        projection only where a target token is. ``k`` larger than the list is clamped with a warning.
        """
        n_ans = answer_ids.shape[0]
        if k > n_ans:
            if (k, n_ans) not in self._clamp_warned:  # once per setting, not once per evaluation batch
                self._clamp_warned.add((k, n_ans))
                logger.warning("num_ans_candidates=%d > %d answers in answer_list; ranking all %d", k, n_ans, n_ans)
            k = n_ans
        batch = question_states.shape[0]
        start = answer_ids[:1, :1].expand(batch, 1)  # [DEC]
        first = self.text_decoder(
            start, encoder_hidden_states=question_states, encoder_attention_mask=question_atts,
            use_cache=True, logits_last_only=True,
        )
        logits = first.logits[:, 0].float()
        first_prob = F.softmax(logits, dim=1).index_select(1, answer_ids[:, 1])
        _, topk_ids = first_prob.topk(k, dim=1)  # (B, k)

        # Every candidate starts with [DEC], whose state depends on the question only: its loss term (the
        # first answer token, label-smoothed as F.cross_entropy does) comes from the step above, and the
        # candidates' remaining tokens run on its cached keys/values (cross-attention K/V once per question).
        logp = F.log_softmax(logits, dim=1)
        eps = self.label_smoothing
        scores = (1 - eps) * logp.gather(1, answer_ids[topk_ids, 1]) + eps * logp.sum(1, keepdim=True) / logp.shape[1]

        # The rest by length: the j-th shortest candidate of every question runs together, so a decoder
        # call pads only to the longest of its rank, and rows stay grouped per question. Ranks of one width
        # share a call; padding changes no score (masked keys, no target there).
        lengths = answer_atts.sum(1)[topk_ids]  # (B, k)
        order = lengths.argsort(dim=1, stable=True)
        widths = lengths.gather(1, order).amax(0).tolist()  # non-decreasing over the ranks
        start = 0
        while start < k:
            end = start + 1
            while end < k and widths[end] == widths[start]:
                end += 1
            cols, width = order[:, start:end], widths[start]
            if width > 2:  # [DEC] + one token is fully scored above
                flat = topk_ids.gather(1, cols).reshape(-1)
                ids, atts = answer_ids[flat, 1:width], answer_atts[flat, :width]
                rows = torch.arange(batch, device=ids.device).repeat_interleave(end - start)
                loss = self.text_decoder(
                    ids, atts, past_key_values=first.past_key_values.reorder(rows),
                    labels=ids.masked_fill(ids == self.tokenizer.pad_token_id, -100), reduction="none",
                    label_smoothing=eps, return_logits=False,
                ).loss
                scores.scatter_add_(1, cols, loss.float().view(batch, -1).neg())
            start = end
        return topk_ids, scores

    def _tokenized_answers(self, answer_list: Sequence[str]) -> tuple[Tensor, Tensor]:
        """The answer list tokenized once ([DEC] first, padding longest), memoised per list content and device."""
        key = (tuple(answer_list), self.device)
        hit = self._answer_cache.get(key)
        if hit is None:
            hit = self._tokenize_answers(key[0])
            self._answer_cache[key] = hit
            while len(self._answer_cache) > _MAX_CACHED_ANSWER_LISTS:
                self._answer_cache.popitem(last=False)
        else:
            self._answer_cache.move_to_end(key)
        return hit
