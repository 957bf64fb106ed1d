"""Training pieces shared by the BLIP heads that learn with ITC + ITM (``blip_retrieval``, ``blip_pretrain``).

* momentum encoders: ``add_momentum_copies`` (frozen deep copies named ``<name>_m``, the original key
  names), ``momentum_update`` (``p_m = m * p_m + (1 - m) * p``, fused over all tensors);
* feature queues: ``enqueue`` writes the gathered momentum features at the pointer and advances it, wrapping
  around the end (the original asserts ``queue_size % batch == 0`` instead, which fails on a short last batch);
* collectives that work in one process: ``concat_all_gather`` (no gradient) and ``all_gather_with_grad``;
* losses: ``itc_distill_loss`` (contrastive loss against momentum features + queue, targets mixed with the
  momentum model's softmax by ``alpha``) and ``itm_hard_negative_loss`` (one hard negative text per image and
  one hard negative image per text, drawn from the softmaxed similarities).

Everything follows BLIP's ``blip_retrieval.py`` / ``blip_pretrain.py``; where the shape of
the computation differs (vectorised sampling, grouped cross-attention), the result is the same in law.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from lavislite.common.dist import get_world_size, is_dist_initialized
from lavislite.common.errors import DataError
from lavislite.models.blip.base import BlipBase
from lavislite.models.blip.retrieval_methods import BlipRetrievalMethods


# -- collectives --------------------------------------------------------------------------------
@torch.no_grad()
def concat_all_gather(tensor: Tensor) -> Tensor:
    """Every rank's ``tensor`` concatenated along dim 0 (rank order); no gradient. Identity in one process."""
    if not is_dist_initialized() or get_world_size() == 1:
        return tensor
    tensor = tensor.contiguous()
    out = [torch.empty_like(tensor) for _ in range(get_world_size())]
    dist.all_gather(out, tensor)
    return torch.cat(out, dim=0)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums the gradients of every rank and returns this rank's slice."""

    @staticmethod
    def forward(ctx, tensor: Tensor) -> tuple[Tensor, ...]:
        out = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(out, tensor.contiguous())
        return tuple(out)

    @staticmethod
    def backward(ctx, *grads: Tensor) -> Tensor:
        stacked = torch.stack(grads)
        dist.all_reduce(stacked)
        return stacked[dist.get_rank()]


def all_gather_with_grad(tensor: Tensor) -> Tensor:
    """Like :func:`concat_all_gather`, but gradients flow back to each rank's own slice."""
    if not is_dist_initialized() or get_world_size() == 1:
        return tensor
    return torch.cat(_GatherWithGrad.apply(tensor), dim=0)


# -- momentum encoders ----------------------------------------------------------------------------
def add_momentum_copies(model: nn.Module, names: Sequence[str]) -> list[tuple[nn.Module, nn.Module]]:
    """Give ``model`` a frozen copy ``<name>_m`` of each submodule ``name``; return the (online, momentum) pairs.

    The copies start equal to the online modules (the original builds fresh modules and copies the weights:
    the same result). Tied parameters inside one online module stay tied in its copy.
    """
    pairs = []
    for name in names:
        online = getattr(model, name)
        momentum = copy.deepcopy(online)
        for p in momentum.parameters():
            p.requires_grad_(False)
        setattr(model, f"{name}_m", momentum)
        pairs.append((online, momentum))
    return pairs


def _param_lists(pairs: Sequence[tuple[nn.Module, nn.Module]]) -> tuple[list[Tensor], list[Tensor]]:
    online, momentum = [], []
    for a, b in pairs:
        pa, pb = list(a.parameters()), list(b.parameters())
        if len(pa) != len(pb):
            raise RuntimeError(f"momentum copy of {type(a).__name__} has {len(pb)} parameters, the online module {len(pa)}")
        online += [p.detach() for p in pa]
        momentum += [p.detach() for p in pb]
    return online, momentum


@torch.no_grad()
def momentum_update(pairs: Sequence[tuple[nn.Module, nn.Module]], momentum: float) -> None:
    """``p_m <- momentum * p_m + (1 - momentum) * p`` for every parameter of every pair."""
    online, averaged = _param_lists(pairs)
    if not online:
        return
    torch._foreach_mul_(averaged, momentum)
    torch._foreach_add_(averaged, online, alpha=1.0 - momentum)


@torch.no_grad()
def copy_params(pairs: Sequence[tuple[nn.Module, nn.Module]]) -> None:
    """Reset the momentum copies to the online weights (after loading weights without ``*_m`` keys)."""
    online, averaged = _param_lists(pairs)
    torch._foreach_copy_(averaged, online)


# -- queues ---------------------------------------------------------------------------------------
@torch.no_grad()
def enqueue(queues: Sequence[Tensor], values: Sequence[Tensor], ptr: Tensor) -> None:
    """Write ``values[i]`` (B, E_i) as columns of ``queues[i]`` (E_i, Q) from ``ptr`` on; advance ``ptr``.

    Writing wraps around the end of the queue; a batch larger than the queue keeps its last Q entries.
    """
    size = queues[0].shape[1]
    batch = values[0].shape[0]
    start = int(ptr.item())
    if batch >= size:  # only the newest `size` entries survive
        values = [v[-size:] for v in values]
        batch, start = size, 0
    cols = (torch.arange(batch, device=queues[0].device) + start) % size
    for q, v in zip(queues, values):
        q[:, cols] = v.t().to(q.dtype)
    ptr[0] = (start + batch) % size


# -- losses ---------------------------------------------------------------------------------------
def itc_distill_loss(
    image_feat: Tensor,
    text_feat: Tensor,
    image_feat_m_all: Tensor,
    text_feat_m_all: Tensor,
    sim_i2t_m: Tensor,
    sim_t2i_m: Tensor,
    sim_targets: Tensor,
    temp: Tensor,
    alpha: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """BLIP's ITC loss: cross-entropy of ``feat @ feats_m_all / temp`` against
    ``alpha * softmax(momentum sims) + (1 - alpha) * sim_targets``, averaged over both directions.

    ``*_m_all`` are (E, B + Q): the momentum features of the batch, then the queue. Returns the loss and
    the online similarities (B, B + Q) image->text and text->image (the ITM negatives are drawn from them).
    """
    with torch.no_grad():
        i2t_targets = alpha * F.softmax(sim_i2t_m, dim=1) + (1 - alpha) * sim_targets
        t2i_targets = alpha * F.softmax(sim_t2i_m, dim=1) + (1 - alpha) * sim_targets
    sim_i2t = image_feat @ text_feat_m_all / temp
    sim_t2i = text_feat @ image_feat_m_all / temp
    loss_i2t = -(F.log_softmax(sim_i2t, dim=1) * i2t_targets).sum(1).mean()
    loss_t2i = -(F.log_softmax(sim_t2i, dim=1) * t2i_targets).sum(1).mean()
    return (loss_i2t + loss_t2i) / 2, sim_i2t, sim_t2i


@torch.no_grad()
def itc_targets(batch: int, queue_size: int, idx: Tensor | None = None, idx_queue: Tensor | None = None) -> Tensor:
    """ITC target distribution over the B + Q columns (batch momentum features, then the queue).

    With image ids (retrieval): every column whose id equals the row's id is a positive, in the batch and
    in the queue (unfilled queue slots hold -100), and the row is normalised. Without: the diagonal.
    """
    if idx is None:
        targets = torch.zeros(batch, batch + queue_size)
        targets[:, :batch].fill_diagonal_(1)
        return targets
    idx = idx.view(-1, 1)
    idx_all = torch.cat([idx.t(), idx_queue.to(idx.device)], dim=1)
    pos = torch.eq(idx, idx_all).float()
    return pos / pos.sum(1, keepdim=True)


def sample_negatives(weights: Tensor) -> Tensor:
    """One index per row of ``weights`` (B, M), drawn with probability proportional to the row.

    A row with no admissible candidate (all zero: every candidate shares the anchor's id) falls back to a
    uniform draw, so a batch of one image's captions does not crash ``multinomial``.
    """
    weights = weights.float()
    empty = weights.sum(1) <= 0
    if bool(empty.any()):
        weights = weights.clone()
        weights[empty] = 1.0
    return torch.multinomial(weights, 1).squeeze(1)


def itm_hard_negative_loss(
    itm_hidden: Callable[[Tensor, Tensor, Tensor], Tensor],
    itm_head: nn.Module,
    image_embeds: Tensor,
    input_ids: Tensor,
    attention_mask: Tensor,
    neg_image_embeds: Tensor,
    neg_ids: Tensor,
    neg_mask: Tensor,
) -> Tensor:
    """ITM cross-entropy over B positive pairs, B (text, hard negative image) and B (image, hard negative text).

    ``itm_hidden(image_tokens, ids, mask)`` is the image-grounded [ENC] state of :meth:`BlipRetrievalMethods.itm_hidden`. The
    positive and the negative text of each image run together as 2 grouped rows per image (no copy of the
    image tokens); the negative images are the only gathered image states, as in the original.
    """
    batch = image_embeds.shape[0]
    # rows (pos_b, negtext_b) grouped per image b
    ids_pair = torch.stack([input_ids, neg_ids], dim=1).flatten(0, 1)
    mask_pair = torch.stack([attention_mask, neg_mask], dim=1).flatten(0, 1)
    out_pair = itm_hidden(image_embeds, ids_pair, mask_pair).view(batch, 2, -1)
    out_negimg = itm_hidden(neg_image_embeds, input_ids, attention_mask)
    logits = itm_head(torch.cat([out_pair[:, 0], out_negimg, out_pair[:, 1]], dim=0))
    labels = torch.cat([torch.ones(batch, dtype=torch.long), torch.zeros(2 * batch, dtype=torch.long)]).to(logits.device)
    return F.cross_entropy(logits, labels)


def alpha_schedule(alpha: float, samples: dict, ramp_epochs: float = 2.0) -> float:
    """The distillation weight for this step.

    ``samples["alpha"]`` wins if given. Otherwise, when the runner passes ``epoch``, ``iters`` and
    ``num_iters_per_epoch`` (LAVIS keys), alpha ramps linearly from 0 to ``alpha`` over the first
    ``ramp_epochs`` epochs (LAVIS: 2; the original BLIP scripts ramp over the first epoch only). Without
    them, the full ``alpha`` is used.
    """
    if samples.get("alpha") is not None:
        return float(samples["alpha"])
    if ramp_epochs <= 0 or samples.get("epoch") is None or not samples.get("num_iters_per_epoch"):
        return float(alpha)
    per_epoch = float(samples["num_iters_per_epoch"])
    done = float(samples["epoch"]) * per_epoch + float(samples.get("iters", 0) or 0)
    return float(alpha) * min(1.0, done / (ramp_epochs * per_epoch))


# -- the shared head ------------------------------------------------------------------------------
MOMENTUM_MODULES = ("visual_encoder", "vision_proj", "text_encoder", "text_proj")


class MomentumContrastiveBase(BlipRetrievalMethods, BlipBase):
    """ViT + text encoder + ITC projections + ITM head, with momentum copies, feature queues and ``temp``;
    :class:`lavislite.models.protocols.RetrievalModel` comes with it (:class:`BlipRetrievalMethods`).

    Subclasses set ``PTR_NAME`` (the queue-pointer buffer's key: ``ptr_queue`` in BLIP_Retrieval,
    ``queue_ptr`` in BLIP_Pretrain), call :meth:`_finish_init` once all online modules exist (so the momentum
    copies match them), and compose :meth:`itc_itm_losses` into their ``forward``.
    """

    PTR_NAME = "queue_ptr"
    ALT_PTR_NAME = "ptr_queue"

    def __init__(
        self,
        visual_encoder: nn.Module,
        vision_width: int,
        text_encoder: nn.Module,
        tokenizer: Any,
        *,  # the heads' constructors hold the defaults
        embed_dim: int,
        queue_size: int,
        momentum: float,
        alpha: float,
        temp: float,
        max_txt_len: int,
        use_idx_queue: bool,
    ) -> None:
        super().__init__(tokenizer)
        if queue_size < 0:
            raise DataError(f"queue_size={queue_size}; use a number of queued features >= 0 (BLIP: 57600; 0 = in-batch negatives only)")
        self.visual_encoder = visual_encoder
        self.text_encoder = text_encoder
        text_width = text_encoder.config.hidden_size
        self.vision_proj = nn.Linear(vision_width, embed_dim)
        self.text_proj = nn.Linear(text_width, embed_dim)
        self.itm_head = nn.Linear(text_width, 2)
        self.temp = nn.Parameter(torch.tensor(float(temp)))
        self.queue_size = int(queue_size)
        self.momentum = float(momentum)
        self.alpha = float(alpha)
        self.max_txt_len = int(max_txt_len)
        self.use_idx_queue = use_idx_queue
        self.register_buffer("image_queue", F.normalize(torch.randn(embed_dim, queue_size), dim=0))
        self.register_buffer("text_queue", F.normalize(torch.randn(embed_dim, queue_size), dim=0))
        if use_idx_queue:
            self.register_buffer("idx_queue", torch.full((1, queue_size), -100, dtype=torch.long))
        self.register_buffer(self.PTR_NAME, torch.zeros(1, dtype=torch.long))

    def _finish_init(self) -> None:
        add_momentum_copies(self, MOMENTUM_MODULES)

    # -- momentum / queue state -----------------------------------------------------------------
    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(getattr(self, n), getattr(self, f"{n}_m")) for n in MOMENTUM_MODULES]

    @property
    def queue_ptr_buffer(self) -> Tensor:
        return getattr(self, self.PTR_NAME)

    def reset_queue_ptr(self) -> None:
        """Start filling the queues from column 0 again (LAVIS ``reset_queue_ptr``)."""
        self.queue_ptr_buffer.zero_()

    @torch.no_grad()
    def _dequeue_and_enqueue(self, image_feat: Tensor, text_feat: Tensor, idxs: Tensor | None = None) -> None:
        if self.queue_size == 0:
            return
        queues = [self.image_queue, self.text_queue]
        values = [concat_all_gather(image_feat), concat_all_gather(text_feat)]
        if idxs is not None:
            queues.append(self.idx_queue)
            values.append(idxs.view(-1, 1))
        enqueue(queues, values, self.queue_ptr_buffer)

    def adapt_state_dict(self, state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
        """Accept both pointer names (LAVIS ``queue_ptr``, BLIP_Retrieval ``ptr_queue``); a checkpoint whose
        queues have another size loses its queue pointer and idx queue too (they index its queue). A
        momentum module with none of its keys in the checkpoint (e.g. an ITM or transformers checkpoint)
        takes its online module's weights instead of staying random."""
        sd = dict(state_dict)
        if self.ALT_PTR_NAME in sd and self.PTR_NAME not in sd:
            sd[self.PTR_NAME] = sd.pop(self.ALT_PTR_NAME)
        else:
            sd.pop(self.ALT_PTR_NAME, None)
        queue = sd.get("image_queue")
        if queue is not None and tuple(queue.shape) != tuple(self.image_queue.shape):
            for key in (self.PTR_NAME, "idx_queue"):
                sd.pop(key, None)
        for name in MOMENTUM_MODULES:
            if any(k.startswith(f"{name}_m.") for k in sd):
                continue
            for key, _ in getattr(self, f"{name}_m").named_parameters(remove_duplicate=False):
                online = sd.get(f"{name}.{key}")
                if online is not None:
                    sd[f"{name}_m.{key}"] = online
        return sd

    # -- training ---------------------------------------------------------------------------------
    def _sample_inputs(self, samples: dict) -> tuple[Tensor, list[str]]:
        image = samples.get("image")
        texts = samples.get("text_input")
        if image is None or texts is None:
            raise DataError(f"{type(self).__name__} training needs samples['image'] (B,3,H,W) and samples['text_input'] (list[str])")
        if isinstance(texts, str):
            texts = [texts]
        if len(texts) != image.shape[0]:
            raise DataError(f"{len(texts)} texts for {image.shape[0]} images; give one text per image")
        return image.to(self.device), list(texts)

    def _negative_weights(self, ctx: dict) -> tuple[Tensor, Tensor]:
        """(weights_i2t (B, M_text), weights_t2i (B, M_img)) for hard-negative sampling; see subclasses."""
        raise NotImplementedError

    def itc_itm_losses(self, image: Tensor, texts: list[str], alpha: float, idx: Tensor | None = None) -> dict[str, Tensor]:
        """ITC with momentum distillation and queues, the queue update, then ITM with hard negatives.

        ``idx`` (B,) are image ids (retrieval: equal ids are positives, in the batch and in the queue);
        None = pretraining (only the diagonal is positive). Returns the losses and, for the LM loss,
        ``image_embeds``, ``input_ids`` and ``attention_mask`` of the batch.
        """
        with torch.no_grad():
            self.temp.clamp_(0.001, 0.5)
        image_embeds, image_proj = self.encode_image(image)
        image_feat = F.normalize(image_proj, dim=-1)
        text_proj, ids, mask = self.encode_text(texts, max_length=self.max_txt_len)
        text_feat = F.normalize(text_proj, dim=-1)
        batch = image.shape[0]

        with torch.no_grad():
            if idx is not None:
                idx = idx.view(-1, 1)
            sim_targets = itc_targets(batch, self.queue_size, idx, self.idx_queue if idx is not None else None).to(image.device)

            momentum_update(self.momentum_pairs(), self.momentum)
            image_feat_m = F.normalize(self.vision_proj_m(self.visual_encoder_m(image)[:, 0]), dim=-1)
            text_feat_m = F.normalize(self.text_proj_m(self.text_encoder_m(ids, mask, mode="text").last_hidden_state[:, 0]), dim=-1)
            image_feat_m_all = torch.cat([image_feat_m.t(), self.image_queue.clone()], dim=1)
            text_feat_m_all = torch.cat([text_feat_m.t(), self.text_queue.clone()], dim=1)
            sim_i2t_m = image_feat_m @ text_feat_m_all / self.temp
            sim_t2i_m = text_feat_m @ image_feat_m_all / self.temp

        loss_itc, sim_i2t, sim_t2i = itc_distill_loss(
            image_feat, text_feat, image_feat_m_all, text_feat_m_all, sim_i2t_m, sim_t2i_m, sim_targets, self.temp, alpha
        )
        idxs = concat_all_gather(idx) if idx is not None else None
        self._dequeue_and_enqueue(image_feat_m, text_feat_m, idxs)

        # ITM with hard negatives ([ENC] is put at position 0 by itm_hidden)
        ctx = dict(
            batch=batch, idx=idx, image_feat=image_feat, text_feat=text_feat, sim_i2t=sim_i2t, sim_t2i=sim_t2i,
            image_embeds=image_embeds, ids=ids, mask=mask,
        )
        with torch.no_grad():
            weights_i2t, weights_t2i = self._negative_weights(ctx)
            neg_img = sample_negatives(weights_t2i)  # a negative image for each text
            neg_txt = sample_negatives(weights_i2t)  # a negative text for each image
        images_pool, ids_pool, mask_pool = self._negative_pools(ctx)
        loss_itm = itm_hard_negative_loss(
            self.itm_hidden, self.itm_head, image_embeds, ids, mask,
            images_pool[neg_img], ids_pool[neg_txt], mask_pool[neg_txt],
        )
        return dict(loss_itc=loss_itc, loss_itm=loss_itm, image_embeds=image_embeds, input_ids=ids, attention_mask=mask)

    def _negative_pools(self, ctx: dict) -> tuple[Tensor, Tensor, Tensor]:
        """Where negatives are drawn from: this rank's batch (image states, token ids, masks)."""
        return ctx["image_embeds"], ctx["ids"], ctx["mask"]
