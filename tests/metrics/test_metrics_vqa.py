"""Official VQA normalisation and accuracy, exact-match accuracy."""

from __future__ import annotations

import pytest

from lavislite.common.errors import DataError
from lavislite.metrics.vqa import (
    exact_match_accuracy,
    normalize_answer,
    vqa_accuracy,
    vqa_score,
)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Two", "2"),
        ("ten", "10"),
        ("none", "0"),
        ("a dog.", "dog"),
        ("The Dog", "dog"),
        ("an apple", "apple"),
        ("isnt", "isn't"),
        ("dont know", "don't know"),
        ("yes!", "yes"),
        ("yes.", "yes"),
        ("what? yes", "what yes"),  # spaced punctuation: deleted, not replaced by a space
        ("x-ray", "x ray"),  # unspaced punctuation becomes a space
        ("1,000", "1000"),  # a digit-comma-digit group deletes punctuation
        ("3.5", "3.5"),  # a period before a digit stays
        ("one hundred", "1 hundred"),  # only single number words are mapped
        ("  A  cat\tsits\n", "cat sits"),
        ("red, white", "red white"),
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


def test_period_strip_removes_at_most_32_periods():
    # The official call passes re.UNICODE (= 32) as re.sub's count.
    assert normalize_answer("." * 40) == "." * 8


def test_normalize_answer_rejects_non_strings():
    with pytest.raises(DataError, match="must be strings"):
        normalize_answer(3)


def test_accuracy_three_or_more_matches_is_one():
    assert vqa_accuracy("yes", ["yes"] * 3 + ["no"] * 7) == pytest.approx(0.9)  # 3 of 10: 7/10·1 + 3/10·2/3
    assert vqa_accuracy("yes", ["yes"] * 4 + ["no"] * 6) == 1.0
    assert vqa_accuracy("yes", ["yes"] * 10) == 1.0


def test_accuracy_one_match_of_ten_is_point_three_exactly():
    assert vqa_accuracy("cat", ["cat"] + ["dog"] * 9) == 0.3


def test_accuracy_partial_values():
    assert vqa_accuracy("cat", ["cat"] * 2 + ["dog"] * 8) == pytest.approx(0.6)  # 8·2/3 + 2·1/3 over 10
    assert vqa_accuracy("bird", ["cat"] * 5 + ["dog"] * 5) == 0.0


def test_accuracy_normalises_prediction_and_disagreeing_answers():
    assert vqa_accuracy("Two.", ["2"] * 10) == 1.0
    assert vqa_accuracy("A Dog", ["dog"] * 10) == 1.0
    # Disagreeing ground truth gets the punctuation step: "red-white" becomes "red white" and counts.
    assert vqa_accuracy("red white", ["red-white"] * 3 + ["blue"] * 7) == pytest.approx(0.9)
    # ...but only that step (official quirk): "dog!" becomes "dog " (trailing space) and does not count.
    assert vqa_accuracy("dog", ["dog!", "dog", "dog?"] + ["cat"] * 7) == pytest.approx(0.3)


def test_accuracy_unanimous_ground_truth_is_left_as_is():
    # Official quirk: ground-truth answers are only processed when annotators disagree.
    assert vqa_accuracy("yes", ["yes!"] * 10) == 0.0


def test_accuracy_other_list_lengths():
    assert vqa_accuracy("cat", ["cat"]) == 0.0  # leave-one-out of a single answer leaves nothing to match
    assert vqa_accuracy("cat", ["cat", "cat"]) == pytest.approx(1 / 3)
    assert vqa_accuracy("cat", ["cat"] * 4 + ["dog"]) == pytest.approx((4 * 3 / 3 + 1) / 5)


@pytest.mark.parametrize("gts", [[], "yes", None, ["yes", 1]])
def test_accuracy_rejects_bad_ground_truth(gts):
    with pytest.raises(DataError):
        vqa_accuracy("yes", gts)


def test_vqa_score_overall_and_per_answer_type():
    annotations = {1: ["2"] * 10, 2: ["yes"] * 9 + ["no"], "3": ["red"] * 10}
    predictions = {"1": "two", 2: "no", 3: "blue"}
    types = {1: "number", "2": "yes/no", 3: "other"}
    out = vqa_score(predictions, annotations, types)
    assert out["n"] == 3
    assert out["overall"] == pytest.approx(100 * (1.0 + 0.3 + 0.0) / 3)
    assert out["per_answer_type"] == pytest.approx({"number": 100.0, "yes/no": 30.0, "other": 0.0})
    assert "per_answer_type" not in vqa_score(predictions, annotations)


def test_vqa_score_errors():
    with pytest.raises(DataError, match="empty"):
        vqa_score({}, {1: ["a"]})
    with pytest.raises(DataError, match="result id 9"):
        vqa_score({9: "a"}, {1: ["a"]})
    with pytest.raises(DataError, match="no entry in answer_types"):
        vqa_score({1: "a"}, {1: ["a"]}, {2: "other"})


def test_exact_match_accuracy():
    preds = {1: "dog", 2: "Two", "3": "cat"}
    gts = {1: "dog", 2: "2", 3: "bird"}
    assert exact_match_accuracy(preds, gts) == pytest.approx(100 / 3)
    assert exact_match_accuracy(preds, gts, normalize=True) == pytest.approx(200 / 3)
    with pytest.raises(DataError, match="must be a string"):
        exact_match_accuracy({1: 1}, {1: "1"})
