"""BLIP-2 stage-1 against transformers with the same random weights: ``Blip2ForImageTextRetrieval`` (vision
tower, Q-Former, ITM and ITC scores), ``Blip2VisionModel`` and ``Blip2Model.get_qformer_features``.

The transformers weights are made by transformers (tiny configs), every tensor re-drawn at a visible scale
(its vision init is 1e-10), and loaded into lavislite through the model's checkpoint path (key conversion,
the q/k/v bias split). Aligned difference: transformers uses one LayerNorm eps for the ViT blocks and its
``post_layernorm`` (= LAVIS's ``ln_vision``, 1e-5 there, 1e-6 in the blocks); the tiny configs use 1e-5 on
both sides so the comparison is exact.
"""

import pytest
import torch

from lavislite.models.blip2.convert import convert_hf_blip2_state_dict

pytestmark = pytest.mark.single_thread  # tiny models: one intra-op thread

Q, IMG = 4, 28
TEXTS = ["a red circle on the left", "two small shapes", "an orange triangle"]


def _hf_config(tok, stage1: bool = True):
    from transformers import (
        Blip2Config,
        Blip2QFormerConfig,
        Blip2VisionConfig,
        OPTConfig,
    )

    vision = Blip2VisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                               image_size=IMG, patch_size=14, layer_norm_eps=1e-5)
    qformer = Blip2QFormerConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                                 vocab_size=len(tok), max_position_embeddings=64, use_qformer_text_input=stage1)
    text = OPTConfig(hidden_size=32, num_hidden_layers=2, ffn_dim=37, num_attention_heads=4, vocab_size=99,
                     max_position_embeddings=64, word_embed_proj_dim=32, bos_token_id=2, eos_token_id=50, pad_token_id=1)
    return Blip2Config(vision_config=vision.to_dict(), qformer_config=qformer.to_dict(), text_config=text.to_dict(),
                       num_query_tokens=Q, image_text_hidden_size=16)


def _randomise(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model.eval()


def _ours(build_tiny, arch="blip2"):
    return build_tiny(arch, image_size=IMG, num_query_token=Q, embed_dim=16,
                       vit_overrides={"patch_size": 14, "embed_dim": 32, "depth": 2, "num_heads": 4,
                                      "mlp_ratio": 37 / 32, "layer_norm_eps": 1e-5},
                       qformer_overrides={"intermediate_size": 37}).eval()


@pytest.fixture
def pair(build_tiny, tiny_tokenizer):
    from transformers import Blip2ForImageTextRetrieval

    torch.manual_seed(0)
    hf = _randomise(Blip2ForImageTextRetrieval(_hf_config(tiny_tokenizer)))
    ours = _ours(build_tiny, "blip2_image_text_matching")
    report = ours.load_checkpoint(hf.state_dict())
    # transformers has no ITG head (Qformer.cls) and no temperature: those stay as built
    assert not report.unexpected and all(k.startswith("Qformer.cls.") or k == "temp" for k in report.missing), report
    return hf, ours


def _inputs(tok):
    image = torch.randn(3, 3, IMG, IMG, generator=torch.Generator().manual_seed(1))
    enc = tok(TEXTS, padding="longest", return_tensors="pt")
    return image, enc.input_ids, enc.attention_mask


def test_itm_logits_equal_transformers(pair, tiny_tokenizer):
    hf, ours = pair
    image, ids, mask = _inputs(tiny_tokenizer)
    with torch.no_grad():
        ref = hf(pixel_values=image, input_ids=ids, attention_mask=mask, use_image_text_matching_head=True).logits_per_image
        logits = ours({"image": image, "text_input": TEXTS}, match_head="itm")
        tokens, _ = ours.encode_image(image)
        match = ours.itm_logits(tokens, ids, mask)
    torch.testing.assert_close(logits, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(match, ref[:, 1], atol=1e-5, rtol=1e-5)


def test_itc_scores_equal_transformers(pair, tiny_tokenizer):
    hf, ours = pair
    image, ids, mask = _inputs(tiny_tokenizer)
    with torch.no_grad():
        ref = hf(pixel_values=image, input_ids=ids, attention_mask=mask, use_image_text_matching_head=False).logits_per_image
        _, image_feats = ours.encode_image(image)
        text_feats, _, _ = ours.encode_text(TEXTS)
        sims = ours.itc_similarity(image_feats, text_feats)
        paired = ours({"image": image, "text_input": TEXTS}, match_head="itc")
    assert sims.shape == (3, 3) and sims.dtype == torch.float32
    torch.testing.assert_close(sims, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(paired[:, 0], ref.diagonal(), atol=1e-5, rtol=1e-5)


def test_vision_tower_and_qformer_features_equal_transformers(build_tiny, tiny_tokenizer):
    """``Blip2Model``: its vision model (= ln_vision(EVA ViT)) and ``get_qformer_features`` (the query pass);
    its language-model keys are reported unexpected by name, as this stage-1 model has no LLM."""
    from transformers import Blip2Model

    torch.manual_seed(0)
    hf = _randomise(Blip2Model(_hf_config(tiny_tokenizer, stage1=False)), seed=3)
    ours = _ours(build_tiny)
    # a stage-2 Blip2Model holds no Q-Former text side or ITC/ITM heads: a partial load on purpose
    report = ours.load_checkpoint(hf.state_dict(), strict=False)
    assert report.unexpected and all(k.startswith(("language_model.", "language_projection.")) for k in report.unexpected)
    image = torch.randn(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref_tokens = hf.vision_model(pixel_values=image).last_hidden_state
        ref_queries = hf.get_qformer_features(pixel_values=image)
        ref_queries = getattr(ref_queries, "last_hidden_state", ref_queries)
        tokens = ours.image_embeds(image)
        queries = ours.query_output(tokens).last_hidden_state
    torch.testing.assert_close(tokens, ref_tokens, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(queries, ref_queries, atol=1e-5, rtol=1e-5)


def test_qkv_bias_split_drops_only_the_k_part():
    bias = torch.arange(12.0)
    out = convert_hf_blip2_state_dict({"vision_model.encoder.layers.3.self_attn.qkv.bias": bias})
    assert out["visual_encoder.blocks.3.attn.q_bias"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert out["visual_encoder.blocks.3.attn.v_bias"].tolist() == [8.0, 9.0, 10.0, 11.0]
    assert len(out) == 2
