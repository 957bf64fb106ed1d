"""Rank inference: the batched, grouped implementation vs a straightforward per-question
reference of the original algorithm (repeat the question states k times, score each candidate by -loss)."""

import logging

import pytest
import torch
import torch.nn.functional as F

from lavislite.common.errors import ConfigError, DataError
from tests.helpers.vqa import ANSWERS, QUESTIONS, make_vqa, randomise


def reference_rank(model, states, q_mask, answer_list, k):
    """The original rank_answer, one question at a time, question states repeated k times."""
    tok = model.tokenizer
    a = tok(answer_list, padding="longest", return_tensors="pt")
    ids, atts = a.input_ids.clone(), a.attention_mask
    ids[:, 0] = tok.bos_token_id
    all_ids, all_scores, answers = [], [], []
    for b in range(states.shape[0]):
        st, m = states[b : b + 1], q_mask[b : b + 1]
        logits = model.text_decoder(ids[:1, :1], encoder_hidden_states=st, encoder_attention_mask=m).logits[:, 0]
        prob = F.softmax(logits, dim=1).index_select(1, ids[:, 1])
        _, topk = prob.topk(k, dim=1)
        cand, catt = ids[topk[0]], atts[topk[0]]
        labels = cand.masked_fill(cand == tok.pad_token_id, -100)
        loss = model.text_decoder(cand, catt, encoder_hidden_states=st.repeat(k, 1, 1),
                                  encoder_attention_mask=m.repeat(k, 1), labels=labels, reduction="none").loss
        scores = -loss
        all_ids.append(topk[0])
        all_scores.append(scores)
        answers.append(answer_list[int(topk[0, scores.argmax()])])
    return torch.stack(all_ids), torch.stack(all_scores), answers


@pytest.fixture()
def ranked_model(tiny_tokenizer):
    model = make_vqa(tiny_tokenizer, seed=2).eval()
    randomise(model, 5)
    return model


@pytest.mark.parametrize("k", [1, 5, len(ANSWERS)])
def test_rank_matches_reference(ranked_model, vqa_images, k):
    model = ranked_model
    samples = {"image": vqa_images, "text_input": QUESTIONS}
    with torch.no_grad():
        states, q_mask = model.encode_question(samples)
        assert bool((q_mask == 0).any())  # padded questions: the mask matters in rank mode
        ref_ids, ref_scores, ref_answers = reference_rank(model, states, q_mask, ANSWERS, k)
        ids, mask = model._tokenized_answers(ANSWERS)
        topk_ids, scores = model.rank_answers(states, q_mask, ids, mask, k)
    assert torch.equal(topk_ids, ref_ids)
    torch.testing.assert_close(scores, ref_scores, atol=1e-5, rtol=1e-5)
    assert model.predict_answers(samples, answer_list=ANSWERS, num_ans_candidates=k) == ref_answers


def test_rank_scores_are_label_smoothed_sums(ranked_model, vqa_images):
    """score = -(sum over answer tokens and [SEP] of the 0.1-smoothed CE), no first-token log-prob added."""
    model = ranked_model
    with torch.no_grad():
        states, q_mask = model.encode_question({"image": vqa_images[:1], "text_input": QUESTIONS[:1]})
        ids, mask = model._tokenized_answers(ANSWERS)
        topk_ids, scores = model.rank_answers(states, q_mask, ids, mask, 3)
        cand = ids[topk_ids[0, 0]][: int(mask[topk_ids[0, 0]].sum())][None]
        logp = model.text_decoder(cand, encoder_hidden_states=states, encoder_attention_mask=q_mask).logits.log_softmax(-1)[0, :-1]
        target = cand[0, 1:]
        nll = -logp.gather(1, target[:, None]).squeeze(1)
        smooth = -logp.mean(1)
        expected = -(0.9 * nll + 0.1 * smooth).sum()
    torch.testing.assert_close(scores[0, 0], expected, atol=1e-5, rtol=1e-5)


def test_k_larger_than_list_uses_whole_list(ranked_model, vqa_images, caplog):
    model = ranked_model
    samples = {"image": vqa_images, "text_input": QUESTIONS}
    small = ANSWERS[:4]
    with caplog.at_level(logging.WARNING):
        got = model.predict_answers(samples, answer_list=small, num_ans_candidates=1000)
    assert "ranking all 4" in caplog.text
    with torch.no_grad():
        states, q_mask = model.encode_question(samples)
        _, _, ref = reference_rank(model, states, q_mask, small, 4)
    assert got == ref


def test_answer_list_tokenized_once(ranked_model, vqa_images):
    model = ranked_model
    samples = {"image": vqa_images, "text_input": QUESTIONS}
    calls = []
    tok = model.tokenizer
    original = type(tok).__call__

    def counting(self, texts, *a, **kw):
        calls.append(len(texts))
        return original(self, texts, *a, **kw)

    type(tok).__call__ = counting
    try:
        first = model.predict_answers(samples, answer_list=ANSWERS, num_ans_candidates=4)
        second = model.predict_answers(samples, answer_list=list(ANSWERS), num_ans_candidates=4)
        model.predict_answers(samples, answer_list=tuple(ANSWERS[:5]), num_ans_candidates=4)
    finally:
        type(tok).__call__ = original
    assert first == second
    # each call tokenizes the 4 questions; the answer list only the first time per distinct list
    assert calls.count(len(ANSWERS)) == 1 and calls.count(5) == 1 and calls.count(len(QUESTIONS)) == 3


def test_precomputed_image_embeds(ranked_model, vqa_images):
    """Video QA passes frame tokens concatenated as samples['image_embeds']."""
    model = ranked_model
    with torch.no_grad():
        embeds = model.visual_encoder(vqa_images)
    by_image = model.predict_answers({"image": vqa_images, "text_input": QUESTIONS}, answer_list=ANSWERS)
    by_embeds = model.predict_answers({"image_embeds": embeds, "text_input": QUESTIONS}, answer_list=ANSWERS)
    assert by_image == by_embeds
    frames = torch.cat([embeds, embeds.flip(0)], dim=1)  # (B, 2*N, D): two "frames" per video
    assert len(model.predict_answers({"image_embeds": frames, "text_input": QUESTIONS}, inference_method="generate")) == 4


def test_input_errors(tiny_vqa, vqa_images):
    samples = {"image": vqa_images, "text_input": QUESTIONS}
    with pytest.raises(ConfigError, match="answer_list"):
        tiny_vqa.predict_answers(samples)
    with pytest.raises(ConfigError, match="non-empty"):
        tiny_vqa.predict_answers(samples, answer_list=[])
    with pytest.raises(ConfigError, match="inference_method"):
        tiny_vqa.predict_answers(samples, inference_method="beam")
    with pytest.raises(ConfigError, match="num_ans_candidates"):
        tiny_vqa.predict_answers(samples, answer_list=ANSWERS, num_ans_candidates=0)
    with pytest.raises(DataError, match="image"):
        tiny_vqa.predict_answers({"text_input": QUESTIONS}, answer_list=ANSWERS)
    with pytest.raises(DataError, match="questions"):
        tiny_vqa.predict_answers({"image": vqa_images, "text_input": QUESTIONS[:2]}, answer_list=ANSWERS)


def test_rank_by_length_runs_and_empty_answer(ranked_model, vqa_images):
    """Candidates of many lengths (several decoder calls by width) and an answer with no token
    ([DEC][SEP], scored by the shared [DEC] step alone) rank as the per-question reference does."""
    model = ranked_model
    answers = ["", "a very long answer with many words"] + ANSWERS
    with torch.no_grad():
        states, q_mask = model.encode_question({"image": vqa_images, "text_input": QUESTIONS})
        ref_ids, ref_scores, ref_answers = reference_rank(model, states, q_mask, answers, len(answers))
        ids, mask = model._tokenized_answers(answers)
        topk_ids, scores = model.rank_answers(states, q_mask, ids, mask, len(answers))
    assert torch.equal(topk_ids, ref_ids)
    torch.testing.assert_close(scores, ref_scores, atol=1e-5, rtol=1e-5)
    assert [answers[i] for i in topk_ids.gather(1, scores.argmax(1, keepdim=True)).squeeze(1).tolist()] == ref_answers
