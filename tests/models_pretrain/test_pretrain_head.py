"""blip_pretrain: tied encoder/decoder, training, pretrain checkpoints into every downstream head, init_from."""

import pytest
import torch

from lavislite.common.checkpoint import save_checkpoint
from lavislite.common.registry import registry

pytestmark = pytest.mark.single_thread  # tiny models: one intra-op thread

CAPTIONS = ["a red circle on the left", "a blue square next to a green triangle", "two small shapes on a table", "an orange triangle"]


def _samples(batch=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(batch, 3, 32, 32, generator=g), "text_input": CAPTIONS[:batch]}


def _is_self_attention(key: str) -> bool:
    return ".attention.self." in key or ".attention.output." in key


def test_encoder_decoder_share_everything_but_self_attention(build_tiny):
    m = build_tiny("blip_pretrain")
    sd = m.state_dict()
    enc = {k[len("text_encoder."):]: v for k, v in sd.items() if k.startswith("text_encoder.")}
    dec = {k[len("text_decoder.bert."):]: v for k, v in sd.items() if k.startswith("text_decoder.bert.")}
    assert set(enc) == set(dec) and enc  # both names are in the state dict, as in the official files
    for key in enc:
        shared = enc[key].data_ptr() == dec[key].data_ptr()
        assert shared != _is_self_attention(key), key
    # the LM head is tied to the (shared) word embeddings
    assert m.text_decoder.cls.predictions.decoder.weight is m.text_encoder.embeddings.word_embeddings.weight
    # the momentum encoder is a separate copy
    assert m.text_encoder_m.embeddings.word_embeddings.weight.data_ptr() != m.text_encoder.embeddings.word_embeddings.weight.data_ptr()
    # the optimizer sees each shared tensor once
    n_unique = len({p.data_ptr() for p in m.parameters()})
    assert n_unique == len(list(m.parameters()))
    assert "queue_ptr" in sd and "ptr_queue" not in sd and "idx_queue" not in sd


def test_pretrain_training_decreases_loss(build_tiny):
    m = build_tiny("blip_pretrain")
    samples = _samples()
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=2e-3)
    logs = []
    for _ in range(8):
        out = m(samples)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        logs.append(out.scalars())
    assert set(logs[0]) == {"loss", "loss_itc", "loss_itm", "loss_lm"}
    assert logs[0]["loss"] == pytest.approx(logs[0]["loss_itc"] + logs[0]["loss_itm"] + logs[0]["loss_lm"], rel=1e-5)
    # ITC cannot reach 0 on one repeated batch (its own earlier copies sit in the queue as negatives); LM can
    assert sum(x["loss_lm"] for x in logs[-3:]) < sum(x["loss_lm"] for x in logs[:3]) - 0.5, logs
    assert sum(x["loss"] for x in logs[-3:]) < sum(x["loss"] for x in logs[:3]), logs
    # tying survives training: still one tensor
    assert m.text_encoder.encoder.layer[0].intermediate is m.text_decoder.bert.encoder.layer[0].intermediate


@pytest.mark.parametrize("arch", ["blip_pretrain", "blip_retrieval"])
def test_queue_size_zero_is_in_batch_itc(build_tiny, arch):
    """queue_size 0: ITC over the batch's momentum features only (the demo trains from scratch this way)."""
    import torch.nn.functional as F

    m = build_tiny(arch, queue_size=0, momentum=0.0, alpha=0.0).eval()  # eval: no dropout, so online == momentum
    assert m.image_queue.shape[1] == 0
    samples = _samples()
    if arch == "blip_retrieval":
        samples = {**samples, "image_id": torch.arange(len(samples["text_input"]))}
    out = m(samples)
    with torch.no_grad():
        _, ip = m.encode_image(samples["image"])
        tp, _, _ = m.encode_text(samples["text_input"], max_length=m.max_txt_len)
        logits = F.normalize(ip, dim=-1) @ F.normalize(tp, dim=-1).t() / m.temp
        target = torch.arange(len(logits))
        expected = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
    assert float(out.loss_itc.detach()) == pytest.approx(float(expected), rel=1e-4)
    assert int(m.queue_ptr_buffer) == 0
    with pytest.raises(Exception, match="queue_size=-1"):
        build_tiny(arch, queue_size=-1)


def test_untied_option(build_tiny):
    m = build_tiny("blip_pretrain", tie_text_weights=False)
    assert m.shared_text_modules == []
    assert m.text_encoder.embeddings is not m.text_decoder.bert.embeddings


# -- pretrain checkpoint into every downstream head ---------------------------------------------------
def _nlvr_missing(model) -> set[str]:
    cfg = model.text_encoder.config
    merge = {
        f"text_encoder.encoder.layer.{i}.crossattention.output.merge_layer.{p}"
        for i in range(cfg.merge_layer_start, cfg.num_hidden_layers)
        for p in ("weight", "bias")
    }
    return merge | {f"cls_head.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")}


# arch -> the keys a BLIP pre-training checkpoint does not provide
EXPECTED_MISSING = {
    "blip_caption": lambda m: set(),
    "blip_image_text_matching": lambda m: set(),
    "blip_feature_extractor": lambda m: set(),
    "blip_retrieval": lambda m: {"idx_queue"},  # the pointer comes from queue_ptr (renamed on load)
    "blip_vqa": lambda m: set(),
    "blip_nlvr": _nlvr_missing,  # twin cross-attention self0/self1/dense0/dense1 are copied from crossattention
    "blip_pretrain": lambda m: set(),
}


@pytest.mark.parametrize("arch", sorted(EXPECTED_MISSING))
def test_pretrain_checkpoint_loads_into_every_head(arch, build_tiny, tmp_path):
    if arch not in registry.list_models():
        pytest.skip(f"{arch} is not registered in this checkout yet (its head file does not exist)")
    src = build_tiny("blip_pretrain", seed=1)
    path = save_checkpoint(src, tmp_path / "model_base_tiny.pth")
    model = build_tiny(arch, seed=2)
    report = model.load_checkpoint(path)
    assert set(report.missing) == EXPECTED_MISSING[arch](model), report
    assert report.mismatched == [], report
    loaded = model.state_dict()
    source = src.state_dict()
    for key in ("visual_encoder.blocks.0.attn.qkv.weight", "visual_encoder.pos_embed"):
        assert torch.equal(loaded[key], source[key]), key
    if any(k.startswith("text_encoder.encoder.layer.0.attention.self.query") for k in loaded):
        key = "text_encoder.encoder.layer.0.attention.self.query.weight"
        assert torch.equal(loaded[key], source[key])
    if "text_decoder.cls.predictions.bias" in loaded:
        assert torch.equal(
            loaded["text_decoder.bert.encoder.layer.1.attention.self.key.weight"],
            source["text_decoder.bert.encoder.layer.1.attention.self.key.weight"],
        )


def test_pretrain_round_trip_and_other_image_size(build_tiny, tmp_path):
    a = build_tiny("blip_pretrain", seed=1)
    a(_samples())
    path = save_checkpoint(a, tmp_path / "pre.pth")
    b = build_tiny("blip_pretrain", seed=2)
    assert b.load_checkpoint(path, strict=True).clean
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    # ties hold after loading (the shared tensors were loaded twice with equal values)
    assert b.text_encoder.encoder.layer[1].output is b.text_decoder.bert.encoder.layer[1].output
    big = build_tiny("blip_pretrain", seed=3, image_size=48)
    report = big.load_checkpoint(path)
    assert report.missing == [] and {k for k, _, _ in report.interpolated} == {"visual_encoder.pos_embed", "visual_encoder_m.pos_embed"}


def test_init_from_bert_and_vit(build_tiny, tmp_path, tiny_tokenizer):
    from transformers import BertConfig, BertForPreTraining

    from lavislite.models.vit import create_vit

    vocab = len(tiny_tokenizer) - 2  # the BERT vocab without [DEC]/[ENC]
    cfg = BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)
    torch.manual_seed(5)
    bert = BertForPreTraining(cfg)
    bert.save_pretrained(tmp_path / "bert")
    vit, _ = create_vit("base", 32, embed_dim=32, depth=2, num_heads=4, patch_size=8)
    vit_sd = {**vit.state_dict(), "head.weight": torch.zeros(10, 32), "head.bias": torch.zeros(10)}
    torch.save({"model": vit_sd}, tmp_path / "deit.pth")

    m = build_tiny("blip_pretrain", init_from={"vit": str(tmp_path / "deit.pth"), "bert": str(tmp_path / "bert")})
    hf = bert.state_dict()
    assert torch.equal(m.visual_encoder.blocks[1].mlp.fc1.weight, vit.blocks[1].mlp.fc1.weight)
    word = m.text_encoder.embeddings.word_embeddings.weight
    assert word.shape[0] == len(tiny_tokenizer) and torch.equal(word[:vocab], hf["bert.embeddings.word_embeddings.weight"])
    for name in ("encoder.layer.1.attention.self.query.weight", "encoder.layer.0.intermediate.dense.weight"):
        assert torch.equal(m.text_encoder.state_dict()[name], hf[f"bert.{name}"])
        assert torch.equal(m.text_decoder.bert.state_dict()[name], hf[f"bert.{name}"])
    assert torch.equal(m.text_decoder.cls.predictions.transform.dense.weight, hf["cls.predictions.transform.dense.weight"])
    assert torch.equal(m.text_encoder_m.encoder.layer[0].intermediate.dense.weight, hf["bert.encoder.layer.0.intermediate.dense.weight"])


def test_retrieval_protocol_on_pretrain(build_tiny):
    m = build_tiny("blip_pretrain")
    m.eval()
    with torch.no_grad():
        tokens, proj = m.encode_image(_samples(2)["image"])
        text_proj, ids, mask = m.encode_text(CAPTIONS[:2])
        scores = m.itm_logits(tokens, ids, mask)
    assert tokens.shape[0] == 2 and proj.shape == (2, 16) and text_proj.shape == (2, 16)
    assert ids.shape == (2, 35) and scores.shape == (2,)
