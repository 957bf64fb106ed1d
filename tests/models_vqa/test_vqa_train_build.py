"""VQA training loss (weighted, grouped or indexed), overfitting, model types and checkpoint round trips."""

import pytest
import torch

from lavislite.common.checkpoint import save_checkpoint
from lavislite.common.errors import DataError
from lavislite.models.blip.vqa import BlipVQA
from tests.helpers.vqa import QUESTIONS, make_vqa, randomise


def _batch(images, n_answers):
    answers = ["red", "blue", "two", "three", "yes", "no", "tennis racket", "pizza", "man", "woman", "sky", "water"]
    total = sum(n_answers)
    return {
        "image": images,
        "text_input": QUESTIONS,
        "answer": answers[:total],
        "weight": torch.linspace(0.2, 1.0, total),
        "n_answers": torch.tensor(n_answers),
    }


def _reference_loss(model, samples):
    """The original: question states repeated per answer, sum(weight * per-answer loss) / batch."""
    tok = model.tokenizer
    states, q_mask = model.encode_question(samples)
    n = samples["n_answers"]
    a = tok(samples["answer"], padding="longest", return_tensors="pt")
    ids = a.input_ids.clone()
    ids[:, 0] = tok.bos_token_id
    labels = ids.masked_fill(ids == tok.pad_token_id, -100)
    loss = model.text_decoder(ids, a.attention_mask, encoder_hidden_states=states.repeat_interleave(n, 0),
                              encoder_attention_mask=q_mask.repeat_interleave(n, 0), labels=labels, reduction="none").loss
    return (samples["weight"] * loss).sum() / states.shape[0]


@pytest.mark.parametrize("n_answers", [[2, 2, 2, 2], [1, 3, 2, 1]])
def test_training_loss_matches_original(tiny_tokenizer, vqa_images, n_answers):
    model = make_vqa(tiny_tokenizer, seed=3).eval()  # eval: no dropout, so both computations are deterministic
    randomise(model, 7, scale=0.1)
    samples = _batch(vqa_images, n_answers)
    out = model(samples)
    torch.testing.assert_close(out.loss, _reference_loss(model, samples), atol=1e-5, rtol=1e-5)
    assert out.loss_lm is out.loss


def test_training_loss_decreases(tiny_tokenizer, vqa_images):
    model = make_vqa(tiny_tokenizer, seed=4).train()
    samples = _batch(vqa_images, [1, 2, 1, 2])
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(30):
        loss = model(samples).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.6 * losses[0], losses


def test_training_input_errors(tiny_vqa, vqa_images):
    samples = _batch(vqa_images, [1, 1, 1, 1])
    with pytest.raises(DataError, match="n_answers"):
        tiny_vqa({**samples, "n_answers": torch.tensor([1, 1, 1, 2])})
    with pytest.raises(DataError, match="weight"):
        tiny_vqa({k: v for k, v in samples.items() if k != "weight"})


def test_official_format_round_trip(tiny_tokenizer, vqa_images, tmp_path):
    src = make_vqa(tiny_tokenizer, seed=5).eval()
    randomise(src, 9, scale=0.1)
    path = save_checkpoint(src, tmp_path / "vqa.pth")
    assert set(torch.load(path, weights_only=True)) == {"model"}
    dst = make_vqa(tiny_tokenizer, seed=6).eval()
    report = dst.load_checkpoint(path)
    assert report.clean, str(report)
    samples = {"image": vqa_images, "text_input": QUESTIONS}
    answers = ["red", "two", "yes", "pizza", "sky"]
    assert dst.predict_answers(samples, answer_list=answers) == src.predict_answers(samples, answer_list=answers)
    assert dst.predict_answers(samples, inference_method="generate") == src.predict_answers(samples, inference_method="generate")

    # a checkpoint saved at 32 px loads at 48 px (pos_embed interpolated, nothing else touched)
    big = make_vqa(tiny_tokenizer, seed=7, image_size=48).eval()
    report = big.load_checkpoint(path)
    assert not report.missing and not report.unexpected and not report.mismatched
    assert [k for k, _, _ in report.interpolated] == ["visual_encoder.pos_embed"]
    assert big.visual_encoder.pos_embed.shape[1] == 1 + 36
    assert len(big.predict_answers({"image": torch.randn(2, 3, 48, 48), "text_input": QUESTIONS[:2]}, answer_list=answers)) == 2


def test_tiny_type_builds_from_pretrained(tiny_tokenizer):
    vocab_dir = tiny_tokenizer.vocab_file if hasattr(tiny_tokenizer, "vocab_file") else None
    model = BlipVQA.from_pretrained("tiny", tokenizer=str(vocab_dir), med_overrides={"vocab_size": len(tiny_tokenizer)})
    assert model.text_decoder.config.encoder_width == model.text_encoder.config.hidden_size
    assert model.text_encoder.config.encoder_width == model.visual_encoder.embed_dim
    assert model.tokenizer.enc_token_id == tiny_tokenizer.enc_token_id
    assert BlipVQA.model_types() == ["aokvqa", "okvqa", "tiny", "vqav2"]


@pytest.mark.slow
@pytest.mark.parametrize("model_type", ["vqav2", "okvqa", "aokvqa"])
def test_full_types_build(model_type):
    model = BlipVQA.from_pretrained(model_type, load_finetuned=False, load_pretrained=False)
    sd = model.state_dict()
    # 791 keys in the original VQA state dict, 2 of which are position_ids buffers
    # (non-persistent here, ignored by the loader)
    assert len(sd) == 791 - 2
    assert sd["visual_encoder.pos_embed"].shape == (1, 901, 768)
    assert sd["text_decoder.bert.encoder.layer.0.crossattention.self.key.weight"].shape == (768, 768)
    n = model.num_parameters()
    assert 360e6 < n < 370e6, n  # ViT-B 86M + question encoder ~138M + answer decoder ~139M (tied LM head)
