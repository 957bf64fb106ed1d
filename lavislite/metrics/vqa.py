"""VQA accuracy as computed by the official VQA evaluation (``vqaEval.py``, as vendored by LAVIS).

Faithful to its quirks, which shift reported numbers if "fixed":

* the prediction is always normalised (punctuation, number words, articles, contractions); the ground-truth
  answers only get the punctuation step, and only when the annotators disagree (``len(set(answers)) > 1``);
* the period regex ``(?!<=\\d)(\\.)(?!\\d)`` is a mistyped look-behind, so it removes every period not
  followed by a digit, and ``re.UNICODE`` is passed as the *count* argument: at most 32 are removed;
* punctuation is deleted (not replaced by a space) when the text has a spaced punctuation mark anywhere or
  a digit-comma-digit group.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Hashable, Mapping, Sequence

from lavislite.common.errors import DataError
from lavislite.metrics._inputs import match_ids, type_name
from lavislite.metrics.classification import accuracy

__all__ = ["normalize_answer", "vqa_accuracy", "vqa_score", "exact_match_accuracy"]

CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've",
}  # fmt: skip
NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
ARTICLES = frozenset({"a", "an", "the"})
PUNCTUATION = [";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!"]

_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
_PERIOD_STRIP_COUNT = int(re.UNICODE)  # the official call passes re.UNICODE (32) as sub()'s count


def _process_punctuation(text: str) -> str:
    out = text
    delete_all = _COMMA_STRIP.search(text) is not None
    for p in PUNCTUATION:
        if delete_all or p + " " in text or " " + p in text:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return _PERIOD_STRIP.sub("", out, count=_PERIOD_STRIP_COUNT)


def _process_digit_article(text: str) -> str:
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES)


def normalize_answer(answer: str) -> str:
    """The official normalisation of a predicted answer: "Two" -> "2", "a dog." -> "dog", "isnt" -> "isn't"."""
    if not isinstance(answer, str):
        raise DataError(f"normalize_answer: answers must be strings, got {type_name(answer)}: {answer!r:.80}")
    answer = answer.replace("\n", " ").replace("\t", " ").strip()
    return _process_digit_article(_process_punctuation(answer))


def vqa_accuracy(prediction: str, gt_answers: Sequence[str]) -> float:
    """Official per-question VQA accuracy in [0, 1].

    The mean over the leave-one-out subsets of the ground-truth answers of ``min(#matches / 3, 1)``:
    with 10 answers, 3+ matches give 1.0, 1 match gives 0.3 and 0 give 0. Lists of other lengths use
    the same formula over the answers given.
    """
    if isinstance(gt_answers, str) or not isinstance(gt_answers, Sequence) or len(gt_answers) == 0:
        raise DataError(f"vqa_accuracy: gt_answers must be a non-empty list of answer strings, got {gt_answers!r:.80}")
    for a in gt_answers:
        if not isinstance(a, str):
            raise DataError(f"vqa_accuracy: ground-truth answers must be strings, got {type_name(a)}: {a!r:.80}")
    pred = normalize_answer(prediction)
    gts = list(gt_answers)
    if len(set(gts)) > 1:
        gts = [_process_punctuation(a) for a in gts]
    hits = [a == pred for a in gts]
    total = sum(hits)
    # Integer sums so that e.g. 1 match of 10 is exactly 9/30 = 0.3 (the official float sum differs by 1 ulp).
    return sum(min(3, total - h) for h in hits) / (3 * len(gts))


def vqa_score(
    predictions: Mapping[Hashable, str],
    annotations: Mapping[Hashable, Sequence[str]],
    answer_types: Mapping[Hashable, str] | None = None,
) -> dict:
    """VQA accuracy (×100) of ``predictions`` (question id -> answer) against ``annotations`` (id -> answers).

    Returns ``{"overall": float, "n": int}`` plus ``"per_answer_type": {type: float}`` when
    ``answer_types`` (id -> "yes/no" | "number" | "other") is given. The ids evaluated are those of
    ``predictions``; each must be in ``annotations`` (ints and their string form match). The official
    script rounds to 2 decimals; these values are not rounded.
    """
    pairs = match_ids(predictions, annotations, what="vqa_score")
    per_type: dict[str, list[float]] = defaultdict(list)
    accs = []
    types_by_text = None if answer_types is None else {str(k): v for k, v in answer_types.items()}
    for pred_id, gt_id in pairs:
        acc = vqa_accuracy(predictions[pred_id], annotations[gt_id])
        accs.append(acc)
        if types_by_text is not None:
            if str(gt_id) not in types_by_text:
                raise DataError(f"vqa_score: question {gt_id!r} has no entry in answer_types; give a type for every question")
            per_type[types_by_text[str(gt_id)]].append(acc)
    out: dict = {"overall": 100.0 * sum(accs) / len(accs), "n": len(accs)}
    if types_by_text is not None:
        out["per_answer_type"] = {t: 100.0 * sum(v) / len(v) for t, v in per_type.items()}
    return out


def exact_match_accuracy(
    predictions: Mapping[Hashable, str], answers: Mapping[Hashable, str], *, normalize: bool = False
) -> float:
    """Percentage of questions whose predicted answer equals the single ground-truth answer (video QA style).

    With ``normalize=True`` both sides go through :func:`normalize_answer` first.
    """
    pairs = match_ids(predictions, answers, what="exact_match_accuracy")
    preds, gts = [], []
    for pred_id, gt_id in pairs:
        p, g = predictions[pred_id], answers[gt_id]
        for value, side in ((p, "prediction"), (g, "answer")):
            if not isinstance(value, str):
                raise DataError(f"exact_match_accuracy: {side} for {pred_id!r} must be a string, got {type_name(value)}")
        preds.append(normalize_answer(p) if normalize else p)
        gts.append(normalize_answer(g) if normalize else g)
    return accuracy(preds, gts)
