"""Fuzzing the data path: annotation loaders, caption/question processors, frame-index sampling, VQA answers.

Each property is checked against an oracle written here from the documented format, not against the
code under test, so removing a check in the loaders makes these tests fail.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lavislite.common.errors import DataError
from lavislite.datasets.annotations import load_annotations
from lavislite.datasets.datasets.caption_datasets import TRAIN_FIELDS
from lavislite.datasets.datasets.vqa_datasets import answer_weights, load_answer_list
from lavislite.processors.frame_sampling import STRATEGIES, sample_frame_indices
from lavislite.processors.text_processors import (
    BlipCaptionProcessor,
    BlipQuestionProcessor,
)

FUZZ = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
BAD_BYTES = "@@NOT_UTF8@@"  # replaced by invalid UTF-8 bytes after encoding

# -- annotation records ------------------------------------------------------------------------
# str.splitlines() also splits on these; valid JSONL may hold them inside strings (see the test below)
LINE_BREAKS_BESIDES_NEWLINE = "\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters=LINE_BREAKS_BESIDES_NEWLINE), max_size=6) | st.sampled_from(
    ["", " ", "a.jpg", "cat", BAD_BYTES]
)
_value = (
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(allow_nan=False)
    | _text
    | st.lists(_text, max_size=3)
    | st.dictionaries(st.text(max_size=2), _text, max_size=2)
)
_record = st.dictionaries(st.sampled_from(["image", "caption", "image_id", "other"]), _value, max_size=4) | _value


def _nonempty(v) -> bool:
    return isinstance(v, str) and bool(v.strip())


def _has_bad_bytes(v) -> bool:
    if isinstance(v, str):
        return BAD_BYTES in v
    if isinstance(v, dict):
        return any(_has_bad_bytes(k) or _has_bad_bytes(x) for k, x in v.items())
    if isinstance(v, list):
        return any(_has_bad_bytes(x) for x in v)
    return False


def oracle_ok(rec) -> bool:
    """The caption-train record format (docs/formats.md): image, caption (str or list of str), optional image_id."""
    if not isinstance(rec, dict) or _has_bad_bytes(rec):
        return False
    cap, iid = rec.get("caption"), rec.get("image_id")
    cap_ok = _nonempty(cap) or (isinstance(cap, list) and bool(cap) and all(_nonempty(c) for c in cap))
    iid_ok = iid is None or _nonempty(iid) or (isinstance(iid, int) and not isinstance(iid, bool))
    return _nonempty(rec.get("image")) and cap_ok and iid_ok


def write_records(path: Path, records: list) -> None:
    if path.suffix == ".jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    else:
        text = json.dumps(records, ensure_ascii=False)
    path.write_bytes(text.encode("utf-8").replace(BAD_BYTES.encode(), b"\xff\xfe"))


@FUZZ
@given(records=st.lists(_record, max_size=8), suffix=st.sampled_from([".json", ".jsonl"]))
def test_annotation_loader_validates_every_record(tmp_path_factory, records, suffix):
    path = tmp_path_factory.mktemp("ann") / f"ann{suffix}"
    write_records(path, records)
    good = [i for i, r in enumerate(records) if oracle_ok(r)]

    table = load_annotations([path], TRAIN_FIELDS, skip_bad=True)
    assert [r for f, r in table.origins] == good  # exactly the good records, in order
    assert table.num_skipped == len(records) - len(good)  # every bad one counted
    assert all(table.where(i).startswith(str(path)) for i in range(len(table.records)))

    if len(good) == len(records):
        assert len(load_annotations([path], TRAIN_FIELDS).records) == len(records)
    else:
        first_bad = next(i for i, r in enumerate(records) if not oracle_ok(r))
        with pytest.raises(DataError) as err:
            load_annotations([path], TRAIN_FIELDS)
        assert f"{path}: record {first_bad}:" in str(err.value) and "skip_bad_samples" in str(err.value)


@FUZZ
@given(
    raw=st.binary(max_size=64) | st.lists(_record, max_size=3).map(lambda r: json.dumps(r).encode()[:-1]), suffix=st.sampled_from([".json", ".jsonl"])
)
def test_annotation_loader_arbitrary_bytes_only_data_error(tmp_path_factory, raw, suffix):
    path = tmp_path_factory.mktemp("raw") / f"ann{suffix}"
    path.write_bytes(raw)
    for skip in (False, True):
        try:
            load_annotations([path], TRAIN_FIELDS, skip_bad=skip)
        except DataError as exc:
            assert str(path) in str(exc)


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
def test_deeply_nested_json_is_a_data_error(tmp_path, suffix):
    path = tmp_path / f"deep{suffix}"
    path.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(DataError, match="deep"):
        load_annotations([path], TRAIN_FIELDS)


def test_jsonl_strings_may_hold_unicode_line_separators(tmp_path):
    path = tmp_path / "ann.jsonl"
    write_records(path, [{"image": "a.jpg", "caption": "web text\u2028with a line separator"}])
    assert len(load_annotations([path], TRAIN_FIELDS).records) == 1


# -- text processors ---------------------------------------------------------------------------
_any_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60) | st.lists(
    st.sampled_from(["A", "dog", ".", "!", "(", ")", '"', "*", "#", ":", ";", "~", " ", "  ", "\n", "\t", ",", "?", "'"]), max_size=30
).map("".join)
PUNCT = set('.!"()*#:;~')


@FUZZ
@given(text=_any_text, max_words=st.integers(1, 8), prompt=st.sampled_from(["", "a picture of "]))
def test_caption_processor_properties(text, max_words, prompt):
    proc = BlipCaptionProcessor(prompt=prompt, max_words=max_words)
    try:
        out = proc(text)
    except DataError as exc:
        assert "empty after cleaning" in str(exc)
        assert all(c in PUNCT or c.isspace() for c in text), text  # only punctuation/whitespace was there
        return
    assert out.startswith(prompt)
    body = out[len(prompt) :]
    assert body.strip() and body == body.strip(" ")
    assert not (set(body) & PUNCT) and "  " not in body
    assert len(body.split(" ")) <= max_words
    assert proc(body) == prompt + body  # cleaning is idempotent


@FUZZ
@given(text=_any_text, max_words=st.integers(1, 8))
def test_question_processor_properties(text, max_words):
    proc = BlipQuestionProcessor(max_words=max_words)
    try:
        out = proc(text)
    except DataError as exc:
        assert "empty after cleaning" in str(exc)
        return
    assert out.strip() and not (set(out) & PUNCT)  # (a trailing space can survive truncation: BLIP's quirk)
    assert len(out.split(" ")) <= max_words


@FUZZ
@given(value=st.none() | st.integers() | st.floats() | st.binary(max_size=4) | st.lists(st.text(max_size=3), max_size=2))
def test_text_processors_reject_non_strings(value):
    for proc in (BlipCaptionProcessor(), BlipQuestionProcessor()):
        with pytest.raises(DataError, match="expected a"):
            proc(value)


# -- frame sampling ----------------------------------------------------------------------------
@FUZZ
@given(
    vlen=st.integers(1, 400),
    num_frames=st.integers(1, 40),
    strategy=st.sampled_from(STRATEGIES),
    start=st.integers(-5, 400),
    end=st.none() | st.integers(-5, 500),
    seed=st.integers(0, 2**32 - 1),
)
def test_frame_indices_valid_sorted_counted(vlen, num_frames, strategy, start, end, seed):
    lo, hi = max(start, 0), vlen if end is None else min(end, vlen)
    rng = np.random.default_rng(seed)
    if lo >= hi:
        with pytest.raises(DataError, match="empty frame window"):
            sample_frame_indices(vlen, num_frames, strategy, start=start, end=end, rng=rng)
        return
    idx = sample_frame_indices(vlen, num_frames, strategy, start=start, end=end, rng=rng)
    assert len(idx) == num_frames
    assert all(isinstance(i, int) and lo <= i < hi for i in idx)
    assert idx == sorted(idx)
    if hi - lo >= num_frames and strategy in ("middle", "rand"):
        assert len(set(idx)) == num_frames  # enough frames: no repeats


@FUZZ
@given(vlen=st.integers(-3, 0) | st.none(), num_frames=st.integers(1, 5), strategy=st.sampled_from(STRATEGIES))
def test_frame_sampling_empty_video_is_a_data_error(vlen, num_frames, strategy):
    with pytest.raises(DataError):
        sample_frame_indices(vlen, num_frames, strategy)


# -- VQA answers -------------------------------------------------------------------------------
_answers = st.lists(st.sampled_from(["yes", "no", "2", "red", "a cat"]), min_size=1, max_size=12)


@FUZZ
@given(answers=_answers, source=st.sampled_from(["vqa", "okvqa", "vg"]))
def test_duplicate_answers_merge_into_weights(answers, source):
    uniq, weights = answer_weights(answers, source)
    assert uniq == list(dict.fromkeys(answers))  # each answer once, first-seen order
    if source == "vg":
        assert weights == [0.2] * len(uniq)
    else:
        assert weights == pytest.approx([answers.count(a) / len(answers) for a in uniq])
        assert sum(weights) == pytest.approx(1.0)


@FUZZ
@given(answers=_answers)
def test_answer_list_duplicates_dropped(tmp_path_factory, answers):
    path = tmp_path_factory.mktemp("al") / "answer_list.json"
    path.write_text(json.dumps(answers))
    assert load_answer_list(path) == list(dict.fromkeys(answers))
