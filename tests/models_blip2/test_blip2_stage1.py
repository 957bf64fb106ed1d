"""BLIP-2 stage 1 (``blip2``): losses, gradients, frozen encoder, features, the retrieval contract, checkpoints."""

import pytest
import torch

from lavislite.common.errors import CheckpointError, ConfigError, DataError
from lavislite.common.registry import registry

pytestmark = pytest.mark.single_thread  # tiny models: one intra-op thread

TEXTS = ["a red circle on the left", "a blue square next to a green triangle", "two small shapes on a table",
         "three green squares in a row"]


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(4, 3, 32, 32, generator=g), "text_input": TEXTS}


def test_registry_names_and_types():
    assert registry.get_model_class("blip2") is registry.get_model_class("blip2_feature_extractor")
    itm = registry.get_model_class("blip2_image_text_matching")
    assert issubclass(itm, registry.get_model_class("blip2"))
    assert itm.model_types() == ["coco", "pretrain", "pretrain_vitL", "tiny"]


def test_heads_satisfy_the_retrieval_and_feature_contracts():
    from lavislite.models.protocols import (
        FeatureExtractor,
        RetrievalModel,
        missing_methods,
    )

    for name in ("blip2", "blip2_feature_extractor", "blip2_image_text_matching"):
        assert missing_methods(registry.get_model_class(name), [RetrievalModel, FeatureExtractor]) == []


def test_itm_head_names_itself_in_its_config(tiny_tokenizer):
    """The ITM head shares blip2's yamls (as in LAVIS); the config it was built from (which a model folder
    saves) names the ITM head, so it reloads as one."""
    from lavislite.common.config import model_type_config

    cls = registry.get_model_class("blip2_image_text_matching")
    cfg = model_type_config(cls, "tiny", {"qformer_overrides": {"vocab_size": len(tiny_tokenizer)}})
    assert cfg.model.arch == "blip2"
    assert type(cls.from_config(cfg.model, tokenizer=tiny_tokenizer)) is cls and cfg.model.arch == "blip2_image_text_matching"


def test_forward_losses_gradients_and_frozen_encoder(build_tiny):
    model = build_tiny("blip2").train()
    torch.manual_seed(0)
    out = model(_batch())
    assert torch.allclose(out.loss, out.loss_itc + out.loss_itm + out.loss_lm)
    out.loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in model.visual_encoder.parameters())
    assert not model.visual_encoder.training  # frozen: stays in eval under train()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert no_grad == []
    # the optimizer sees only trainable tensors: nothing of the frozen encoder
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert not trainable & {id(p) for p in model.visual_encoder.parameters()}


def test_losses_fall_in_a_short_training(build_tiny):
    model = build_tiny("blip2", seed=1).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    batch = _batch()
    first = None
    for step in range(12):
        torch.manual_seed(step)
        out = model(batch)
        first = first or {k: v for k, v in out.scalars().items()}
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    last = out.scalars()
    for name in ("loss_itc", "loss_itm", "loss_lm"):
        assert last[name] < first[name], (name, first[name], last[name])


def test_image_ids_give_soft_itc_targets(build_tiny):
    model = build_tiny("blip2").train()
    torch.manual_seed(0)
    out = model({**_batch(), "image_id": torch.tensor([0, 0, 1, 2])})  # two captions of one image
    assert torch.isfinite(out.loss)


def test_extract_features_shapes(build_tiny):
    model = build_tiny("blip2").eval()
    q = model.num_query_token
    f = model.extract_features(_batch(), mode="image")
    assert f.image_embeds.shape == (4, q, 32) and f.image_embeds_proj.shape == (4, q, 16)
    torch.testing.assert_close(f.image_embeds_proj.norm(dim=-1), torch.ones(4, q))
    t = model.extract_features(_batch(), mode="text")
    assert t.text_embeds.shape[:1] == (4,) and t.text_embeds_proj.shape[-1] == 16 and t.image_embeds is None
    m = model.extract_features(_batch(), mode="multimodal")
    assert m.multimodal_embeds.shape == (4, q, 32)
    with pytest.raises(ConfigError, match="mode"):
        model.extract_features(_batch(), mode="fusion")
    with pytest.raises(DataError, match="text_input"):
        model.extract_features({"image": _batch()["image"]}, mode="text")


def test_retrieval_contract_grouped_itm_and_itc(build_tiny):
    """``itm_logits`` on r texts per image (grouped cross-attention) equals the repeated images; ITC is the
    max over queries of the cosine, consistent with the ITM head's paired ``itc``."""
    model = build_tiny("blip2_image_text_matching").eval()
    batch = _batch()
    with torch.no_grad():
        tokens, image_feats = model.encode_image(batch["image"][:2])
        text_feats, ids, mask = model.encode_text(TEXTS, max_length=24)
        grouped = model.itm_logits(tokens, ids, mask)  # 2 texts per image
        repeated = model.itm_logits(tokens.repeat_interleave(2, 0), ids, mask)
        sims = model.itc_similarity(image_feats, text_feats)
        paired = model({"image": batch["image"][:2].repeat_interleave(2, 0), "text_input": TEXTS}, match_head="itc")
    assert grouped.shape == (4,) and sims.shape == (2, 4)
    torch.testing.assert_close(grouped, repeated, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(paired[:, 0], sims.repeat_interleave(2, 0).diagonal(), atol=1e-5, rtol=1e-5)
    with pytest.raises(DataError, match="image_atts"):
        model.itm_logits(tokens, ids, mask, image_atts=torch.zeros(2, tokens.shape[1]))


def test_lavis_pth_round_trip_and_mismatch_named(build_tiny, tmp_path):
    """A LAVIS-format .pth ({'model': state_dict} with LAVIS's key names) loads with nothing missing or
    unexpected and gives the same outputs; a foreign key is reported by name."""
    src = build_tiny("blip2", seed=3).eval()
    path = tmp_path / "blip2_lavis.pth"
    torch.save({"model": src.state_dict()}, path)
    keys = set(src.state_dict())
    assert {"query_tokens", "temp", "ln_vision.weight", "Qformer.bert.encoder.layer.0.crossattention.self.key.weight",
            "Qformer.bert.encoder.layer.0.intermediate_query.dense.weight", "Qformer.cls.predictions.bias",
            "visual_encoder.blocks.0.attn.q_bias", "vision_proj.weight", "itm_head.weight"} <= keys
    assert "Qformer.bert.encoder.layer.1.crossattention.self.key.weight" not in keys  # every second layer
    dst = build_tiny("blip2", seed=4).eval()
    report = dst.load_checkpoint(str(path), strict=True)
    assert not report.missing and not report.unexpected and not report.mismatched
    with torch.no_grad():
        torch.testing.assert_close(dst.extract_features(_batch(), "image").image_embeds_proj,
                                   src.extract_features(_batch(), "image").image_embeds_proj)
    fast = build_tiny("blip2", seed=5, checkpoint=str(path)).eval()  # from_config: built on the meta device, then loaded
    with torch.no_grad():
        torch.testing.assert_close(fast.extract_features(_batch(), "image").image_embeds_proj,
                                   src.extract_features(_batch(), "image").image_embeds_proj)
    sd = src.state_dict()
    sd["Qformer.bert.encoder.layer.1.crossattention.self.key.weight"] = torch.zeros(32, 32)
    with pytest.raises(CheckpointError, match=r"1 unexpected: Qformer\.bert\.encoder\.layer\.\*\.crossattention\.self\.key\.weight"):
        dst.load_checkpoint(sd, strict=True)


def test_vision_checkpoint_file_and_resolution_change(build_tiny, tmp_path):
    """The ViT from its own file (bare keys, one block more than built, a 16 px grid): the extra block is
    dropped, the position embedding resized to 32 px."""
    donor = build_tiny("blip2", seed=5, image_size=16, vit_overrides={"depth": 3}).visual_encoder
    path = tmp_path / "eva_vit_tiny.pth"
    torch.save(donor.state_dict(), path)
    model = build_tiny("blip2", seed=6, vit_checkpoint=str(path))
    torch.testing.assert_close(model.visual_encoder.blocks[1].attn.qkv.weight, donor.blocks[1].attn.qkv.weight)
    assert model.visual_encoder.pos_embed.shape == (1, 17, 32)
    torch.testing.assert_close(model.visual_encoder.pos_embed[:, 0], donor.pos_embed[:, 0])


def test_retrieval_task_scores_on_blip2(build_tiny):
    """The retrieval task's ITC-then-ITM re-ranking runs on BLIP-2's features (32-query max inside the model):
    each re-ranked score is the pair's ITM logit plus its ITC similarity."""
    from lavislite.tasks.retrieval import (
        RetrievalFeatures,
        encode_texts,
        retrieval_scores,
    )

    model = build_tiny("blip2_image_text_matching").eval()
    with torch.no_grad():
        tokens, image_feats = model.encode_image(_batch()["image"][:3])
        text_feats, ids, atts = encode_texts(model, TEXTS)
        feats = RetrievalFeatures(tokens, image_feats.float(), ids, atts, text_feats)
        out = retrieval_scores(model, feats, k_test=2)
        sims = feats.sims(model)
        rows, top, scores = out["i2t"]
        i, j = 0, int(top[0, 0])
        expected = model.itm_logits(tokens[i : i + 1], ids[j : j + 1], atts[j : j + 1])[0] + sims[i, j]
    assert top.shape == (3, 2) and scores.shape == (3, 2)
    torch.testing.assert_close(scores[0, 0], expected, atol=1e-4, rtol=1e-4)
