"""COCO caption metrics: known values, bounded Java tools, SPICE fallback, input errors.

One full run (one tokenizer JVM + one METEOR JVM, ~8 s) is shared by the value checks; the other tests
either need no Java or only the sub-second tokenizer.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("pycocoevalcap")
from pycocoevalcap.bleu.bleu import Bleu  # noqa: E402
from pycocoevalcap.cider.cider import Cider  # noqa: E402
from pycocoevalcap.rouge.rouge import Rouge  # noqa: E402

from lavislite.common.errors import DataError  # noqa: E402
from lavislite.metrics import caption  # noqa: E402
from lavislite.metrics.caption import EvalToolError, coco_caption_scores, ptb_tokenize  # noqa: E402

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="Java is not installed")

# Candidates equal one reference each after PTB tokenisation (lower-case, punctuation dropped).
GTS = {
    1: ["a dog runs on the grass", "a brown dog running in a field"],
    "2": ["two cats sleep on a sofa", "cats sleeping on the couch"],
    3: ["an id that is never evaluated"],
}
RES = {"1": "A dog runs on the grass.", 2: "two cats sleep on a sofa"}
TOKENISED_GTS = {1: GTS[1], 2: GTS["2"]}
TOKENISED_RES = {1: ["a dog runs on the grass"], 2: ["two cats sleep on a sofa"]}


def _java_children() -> list[int]:
    """Pids of live (non-zombie) java processes whose parent is this test process."""
    me, found = os.getpid(), []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            comm = stat.read_text().split("(", 1)[1].rsplit(")", 1)[0]
        except (OSError, IndexError):
            continue
        if int(fields[1]) == me and "java" in comm:
            found.append(int(stat.parent.name))
    return found


@pytest.fixture(scope="module")
def identical_scores():
    if shutil.which("java") is None:
        pytest.skip("Java is not installed")
    return coco_caption_scores(GTS, RES, spice=True, timeout=120, spice_timeout=20)


@needs_java
def test_identical_captions_score_one(identical_scores):
    s = identical_scores
    for n in range(1, 5):
        assert s[f"Bleu_{n}"] == pytest.approx(1.0, abs=1e-6)
    assert s["METEOR"] == pytest.approx(1.0, abs=1e-6)
    assert s["ROUGE_L"] == pytest.approx(1.0)


@needs_java
def test_cider_matches_pycocoevalcap_on_pretokenised_input(identical_scores):
    # Only the result ids form the CIDEr corpus (id 3 is left out), as in BLIP's coco_caption_eval.
    expected, _ = Cider().compute_score(TOKENISED_GTS, TOKENISED_RES)
    assert identical_scores["CIDEr"] == pytest.approx(expected, rel=1e-12)
    assert identical_scores["CIDEr"] > 1.0


@needs_java
def test_spice_reported_unavailable_without_crash(identical_scores):
    if caption.spice_models_present() and identical_scores["SPICE"] is not None:
        pytest.skip("SPICE models are installed and SPICE ran on this machine")
    assert identical_scores["SPICE"] is None
    reason = identical_scores["spice_unavailable"]
    assert isinstance(reason, str) and "SPICE" in reason
    assert not _java_children()


@needs_java
def test_spice_disabled():
    # METEOR is replaced so this needs only the tokenizer JVM; the point is the SPICE bookkeeping.
    s = _scores_without_meteor({1: ["a cat"]}, {1: "a cat"}, spice=False)
    assert s["SPICE"] is None and "disabled" in s["spice_unavailable"]


def _scores_without_meteor(gts, res, **kw):
    mp = pytest.MonkeyPatch()
    mp.setattr(caption, "_meteor", lambda g, r, t: -1.0)
    try:
        return coco_caption_scores(gts, res, **kw)
    finally:
        mp.undo()


@needs_java
def test_non_trivial_scores_match_pycocoevalcap_scorers():
    gts = {10: ["a man is riding a horse", "a person rides a brown horse"],
           11: ["a plate of food on a table", "some food on a white plate"],
           12: ["a red bus on the street", "a bus driving down a road"],
           13: ["unused reference"]}  # fmt: skip
    res = {10: "a man riding a horse", 11: "a plate with food", 12: "a red car on a road"}
    ours = _scores_without_meteor(gts, res, spice=False)
    g = {k: gts[k] for k in res}
    r = {k: [v] for k, v in res.items()}
    bleu, _ = Bleu(4).compute_score(g, r, verbose=0)
    for n in range(4):
        assert ours[f"Bleu_{n + 1}"] == pytest.approx(bleu[n], rel=1e-12)
    assert ours["ROUGE_L"] == pytest.approx(Rouge().compute_score(g, r)[0], rel=1e-12)
    assert ours["CIDEr"] == pytest.approx(Cider().compute_score(g, r)[0], rel=1e-12)
    assert 0 < ours["Bleu_4"] < ours["Bleu_1"] < 1


@needs_java
def test_ptb_tokenize_lowercases_drops_punctuation_and_keeps_alignment():
    out = ptb_tokenize(["A dog, running!", "", "Two cats... (sleeping)", "multi\nline"])
    # pycocoevalcap quirk kept: -lowerCase turns -LRB-/-RRB- into -lrb-/-rrb-, which its
    # upper-case punctuation list then fails to drop.
    assert out == ["a dog running", "", "two cats -lrb- sleeping -rrb-", "multi line"]


@needs_java
def test_meteor_timeout_raises_and_reaps_jvm():
    with pytest.raises(EvalToolError, match="METEOR.*did not finish"):
        caption._meteor({0: ["a dog"]}, {0: ["a dog"]}, timeout=0.3)
    assert not _java_children()


@needs_java
def test_meteor_crash_raises_and_reaps_jvm(monkeypatch):
    base = caption._meteor_class()

    class CrashingMeteor(base):
        def __init__(self):
            super().__init__()
            self.meteor_p.kill()  # the JVM dies before answering, like an out-of-memory exit

    monkeypatch.setattr(caption, "_meteor_class", lambda: CrashingMeteor)
    with pytest.raises(EvalToolError, match="METEOR \\(Java\\) failed"):
        caption._meteor({0: ["a dog"]}, {0: ["a dog"]}, timeout=60)
    assert not _java_children()


@needs_java
def test_spice_jar_failure_is_reported(monkeypatch):
    if caption.spice_models_present():
        pytest.skip("SPICE models are installed; the failure path cannot be forced this way")
    # Pretend CoreNLP is installed: the SPICE JVM then starts and fails on the missing classes.
    monkeypatch.setattr(caption, "spice_models_present", lambda: True)
    score, reason = caption._spice({0: ["a dog"]}, {0: ["a dog"]}, timeout=60, cache_dir=None)
    assert score is None and "SPICE" in reason
    assert not _java_children()


def test_spice_download_is_time_bounded(monkeypatch):
    def hang(cmd, **kw):
        raise subprocess.TimeoutExpired(cmd, kw["timeout"])

    monkeypatch.setattr(caption, "spice_models_present", lambda: False)
    monkeypatch.setattr(caption.subprocess, "run", hang)
    score, reason = caption._spice({0: ["a dog"]}, {0: ["a dog"]}, timeout=5, cache_dir=None)
    assert score is None and "did not finish within 5 s" in reason


def test_missing_java_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(caption.shutil, "which", lambda name: None)
    with pytest.raises(EvalToolError, match="(?s)java.*apt-get install"):
        coco_caption_scores({1: ["a cat"]}, {1: "a cat"})


@pytest.mark.parametrize(
    "gts, res, match",
    [
        ({1: ["a cat"]}, {}, "empty"),
        ({1: ["a cat"]}, {2: "a cat"}, "result id 2 is not in the ground truth"),
        ({1: ["a cat"]}, {"x7": "a cat"}, "'x7'"),
        ({1: ["a cat"]}, {1: 5}, "one caption string"),
        ({1: []}, {1: "a cat"}, "non-empty list"),
        ({1: "a cat"}, {1: "a cat"}, "non-empty list"),
        ({1: ["a cat", None]}, {1: "a cat"}, "must be strings"),
        ({1: ["a"], "1": ["b"]}, {1: "a"}, "only differ in type"),
        ([["a cat"]], {0: "a cat"}, "must be dicts"),
    ],
)
def test_bad_inputs_raise_data_error_before_java(gts, res, match, monkeypatch):
    monkeypatch.setattr(caption, "ptb_tokenize", lambda *a, **k: pytest.fail("validation must come first"))
    with pytest.raises(DataError, match=match):
        coco_caption_scores(gts, res)


@pytest.mark.slow
@needs_java
def test_equals_cocoevalcap_end_to_end(identical_scores, monkeypatch):
    """The reference pipeline (COCOEvalCap without SPICE) gives the same numbers on a mixed set."""
    from pycocoevalcap import eval as coco_eval

    gts = {10: ["A man is riding a horse.", "a person rides a brown horse"],
           11: ["A plate of food, on a table!", "some food on a white plate"]}  # fmt: skip
    res = {10: "A man riding a horse.", 11: "a plate with food"}

    class FakeCoco:
        def __init__(self, d):
            self.imgToAnns = {k: [{"caption": c} for c in (v if isinstance(v, list) else [v])] for k, v in d.items()}

        def getImgIds(self):
            return list(self.imgToAnns)

    class NoSpice:
        def compute_score(self, gts, res):
            return 0.0, [0.0] * len(res)

        def method(self):
            return "SPICE"

    monkeypatch.setattr(coco_eval, "Spice", NoSpice)
    ref = coco_eval.COCOEvalCap(FakeCoco(gts), FakeCoco(res))
    ref.evaluate()
    ours = coco_caption_scores(gts, res, spice=False)
    for key in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"):
        assert ours[key] == pytest.approx(ref.eval[key], rel=1e-9), key
