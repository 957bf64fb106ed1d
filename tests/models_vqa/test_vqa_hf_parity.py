"""BlipVQA vs transformers 5.23 ``BlipForQuestionAnswering`` (tiny, random weights, loaded through
``save_pretrained`` + ``load_checkpoint(dir)``).

Aligned differences:
* HF feeds the tokenizer's [CLS] at position 0 of the question; BLIP uses [ENC]. HF is given our
  question ids ([ENC] first) directly, so both encode the same tokens.
* HF generate uses an all-ones question mask for the decoder, exactly like the original (and us).
* transformers 5.23 ignores cross-attention masks (see tests/models_core/test_med_hf_parity.py), so the
  teacher-forced HF reference runs row by row on the question states with the padding cut off.
* HF beam search is the modern one (its length normalisation and stopping rule differ from 4.15, which
  lavislite reproduces); for these short answers both return the same tokens on every row, which the test
  checks for beam 3 and greedy.
"""

import pytest
import torch

from tests.helpers.vqa import QUESTIONS, make_vqa, randomise

H = 32


@pytest.fixture(scope="module")
def pair(tiny_tokenizer, tmp_path_factory):
    from transformers import BlipConfig, BlipForQuestionAnswering

    tok = tiny_tokenizer
    text = dict(
        vocab_size=len(tok), hidden_size=H, encoder_hidden_size=H, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        label_smoothing=0.1, bos_token_id=tok.bos_token_id, sep_token_id=tok.sep_token_id, eos_token_id=tok.sep_token_id,
        pad_token_id=tok.pad_token_id,
    )
    vision = dict(hidden_size=H, intermediate_size=4 * H, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                  patch_size=8, layer_norm_eps=1e-6, attention_dropout=0.0)
    hf = BlipForQuestionAnswering(BlipConfig(text_config=text, vision_config=vision)).eval()
    randomise(hf, 0)
    path = tmp_path_factory.mktemp("hf_vqa")
    hf.save_pretrained(path)
    ours = make_vqa(tok, seed=1).eval()
    report = ours.load_checkpoint(str(path))
    assert not report.missing and not report.unexpected and not report.mismatched, str(report)
    return hf, ours


def _question_ids(model):
    return model.tokenize(QUESTIONS, padding="longest", max_length=35, first_token=model.tokenizer.enc_token_id)


def _trim(row, pad):
    row = row.tolist()
    while row and row[-1] == pad:
        row.pop()
    return row


@pytest.mark.parametrize("num_beams", [1, 3])
def test_generate_token_identical(pair, vqa_images, num_beams):
    hf, ours = pair
    ids, mask = _question_ids(ours)
    with torch.no_grad():
        ref = hf.generate(input_ids=ids, pixel_values=vqa_images, attention_mask=mask, num_beams=num_beams,
                          max_length=10, min_length=1, do_sample=False)
        states, _ = ours.encode_question({"image": vqa_images, "text_input": QUESTIONS})
        got = ours.generate_answer_ids(states, num_beams=num_beams, max_len=10, min_len=1)
    pad = ours.tokenizer.pad_token_id
    assert [_trim(r, pad) for r in got] == [_trim(r, pad) for r in ref]
    answers = ours.predict_answers({"image": vqa_images, "text_input": QUESTIONS}, inference_method="generate",
                                   num_beams=num_beams)
    assert answers == ours.tokenizer.batch_decode(ref, skip_special_tokens=True)
    assert any(a.strip() for a in answers)  # random weights still produce some tokens


def test_question_states_and_teacher_forced_logits(pair, vqa_images):
    hf, ours = pair
    tok = ours.tokenizer
    ids, mask = _question_ids(ours)
    assert bool((mask == 0).any()), "the test needs padded questions"
    answers = ["tennis racket", "two", "yes", "white bus"]
    a = tok(answers, padding="longest", return_tensors="pt")
    a_ids = a.input_ids.clone()
    a_ids[:, 0] = tok.bos_token_id
    with torch.no_grad():
        image = hf.vision_model(pixel_values=vqa_images).last_hidden_state
        hf_states = hf.text_encoder(input_ids=ids, attention_mask=mask, encoder_hidden_states=image).last_hidden_state
        states, q_mask = ours.encode_question({"image": vqa_images, "text_input": QUESTIONS})
        valid = mask.bool()
        torch.testing.assert_close(states[valid], hf_states[valid], atol=1e-4, rtol=1e-4)
        logits = ours.text_decoder(a_ids, a.attention_mask, encoder_hidden_states=states, encoder_attention_mask=q_mask).logits
        for i in range(len(answers)):
            n = int(mask[i].sum())
            ref = hf.text_decoder(input_ids=a_ids[i : i + 1], attention_mask=a.attention_mask[i : i + 1],
                                  encoder_hidden_states=hf_states[i : i + 1, :n]).logits
            keep = a.attention_mask[i].bool()
            torch.testing.assert_close(logits[i, keep], ref[0, keep], atol=1e-4, rtol=1e-4)
