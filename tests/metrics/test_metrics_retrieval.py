"""Retrieval recall: hand-made score matrices with known ranks, ties, several ground truths, BLIP parity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lavislite.common.errors import DataError
from lavislite.metrics.retrieval import (
    i2t_t2i_recall,
    retrieval_ranks,
    video_text_recall,
)


def _blip_itm_eval_ranks(scores_i2t, scores_t2i, img2txt, txt2img):
    """BLIP's per-query loop (train_retrieval.itm_eval), written out as the reference for untied scores."""
    tr = np.zeros(len(scores_i2t))
    for i, row in enumerate(scores_i2t):
        order = np.argsort(row)[::-1]
        tr[i] = min(np.where(order == t)[0][0] for t in img2txt[i])
    ir = np.zeros(len(scores_t2i))
    for t, row in enumerate(scores_t2i):
        order = np.argsort(row)[::-1]
        ir[t] = np.where(order == txt2img[t])[0][0]
    return tr, ir


def test_ranks_single_ground_truth():
    s = np.array([[0.9, 0.1, 0.5], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1]])
    assert retrieval_ranks(s, [0, 0, 1]).tolist() == [0, 2, 1]


def test_rank_is_best_among_several_ground_truths():
    s = np.array([[0.1, 0.9, 0.8, 0.3, 0.2, 0.0]])
    assert retrieval_ranks(s, [[3, 4]]).tolist() == [2]  # 3 is third; 4 would be fourth
    assert retrieval_ranks(s, [[5, 1]]).tolist() == [0]


def test_ties_pessimistic_and_optimistic():
    s = np.array([
        [0.5, 0.5, 0.5, 0.1],  # gt 1 tied with two others
        [0.2, 0.2, 0.2, 0.2],  # constant scores
        [0.7, 0.7, 0.9, 0.0],  # two gts tied with each other, one better candidate
    ])  # fmt: skip
    gt = [[1], [3], [0, 1]]
    assert retrieval_ranks(s, gt).tolist() == [2, 3, 1]
    assert retrieval_ranks(s, gt, ties="optimistic").tolist() == [0, 0, 1]
    with pytest.raises(DataError, match="ties"):
        retrieval_ranks(s, gt, ties="random")


def test_blip_fill_value_ties_outside_topk():
    # BLIP fills non-re-ranked entries with -100: a ground truth outside the top-k ties with them.
    s = np.full((1, 20), -100.0)
    s[0, :3] = [5.0, 4.0, 3.0]
    assert retrieval_ranks(s, [[10]]).tolist() == [19]
    assert retrieval_ranks(s, [[10]], ties="optimistic").tolist() == [3]


def test_recall_on_hand_made_matrix():
    # 4 images × 8 texts (2 captions each); text ranks per image chosen by hand.
    n_img, n_txt = 4, 8
    img2txt = [[0, 1], [2, 3], [4, 5], [6, 7]]
    txt2img = [0, 0, 1, 1, 2, 2, 3, 3]
    i2t = np.zeros((n_img, n_txt))
    i2t[0] = [9, 1, 8, 7, 6, 5, 4, 3]  # best gt (text 0) at rank 0
    i2t[1] = [9, 8, 7, 1, 6, 5, 4, 3]  # text 2 at rank 2
    i2t[2] = [9, 8, 7, 6, 5, 1, 4, 3]  # text 4 at rank 4
    i2t[3] = [9, 8, 7, 6, 5, 4, 3, 2]  # text 6 at rank 6
    t2i = np.tile([4.0, 3.0, 2.0, 1.0], (n_txt, 1))  # every text ranks image 0 first ... image 3 last
    out = i2t_t2i_recall(i2t, t2i, img2txt, txt2img)
    # TR ranks 0, 2, 4, 6 ; IR ranks 0,0,1,1,2,2,3,3
    assert out["txt_r1"] == 25.0 and out["txt_r5"] == 75.0 and out["txt_r10"] == 100.0
    assert out["img_r1"] == 25.0 and out["img_r5"] == 100.0 and out["img_r10"] == 100.0
    assert out["txt_r_mean"] == pytest.approx(200 / 3)
    assert out["img_r_mean"] == pytest.approx(75.0)
    assert out["r_mean"] == pytest.approx((200 / 3 + 75.0) / 2)
    assert out["txt_medr"] == 4.0  # median of 1, 3, 5, 7
    assert out["img_medr"] == 2.5  # median of 1,1,2,2,3,3,4,4
    assert out["txt_meanr"] == 4.0 and out["img_meanr"] == 2.5


def test_matches_blip_loop_on_random_scores_and_accepts_tensors():
    rng = np.random.default_rng(0)
    n_img, n_txt = 40, 200
    i2t = rng.standard_normal((n_img, n_txt)).astype(np.float32)
    t2i = rng.standard_normal((n_txt, n_img)).astype(np.float32)
    img2txt = [list(range(5 * i, 5 * i + 5)) for i in range(n_img)]
    txt2img = [t // 5 for t in range(n_txt)]
    tr, ir = _blip_itm_eval_ranks(i2t, t2i, img2txt, txt2img)
    assert retrieval_ranks(i2t, img2txt).tolist() == tr.tolist()
    assert retrieval_ranks(torch.from_numpy(t2i), txt2img).tolist() == ir.tolist()
    out = i2t_t2i_recall(torch.from_numpy(i2t), torch.from_numpy(t2i).to(torch.bfloat16).float(), img2txt, txt2img)
    assert out["txt_r10"] == pytest.approx(100.0 * np.mean(tr < 10))


def test_several_ground_truth_images_per_text():
    t2i = np.array([[0.1, 0.9, 0.5], [0.8, 0.2, 0.9]])
    i2t = t2i.T.copy()
    out = i2t_t2i_recall(i2t, t2i, [[1], [0], [1]], [[2, 0], [0, 1]])
    # text 0: gts {2: rank 1, 0: rank 2} -> 1 ; text 1: gts {0: rank 1, 1: rank 2} -> 1
    assert out["img_r1"] == 0.0 and out["img_r5"] == 100.0 and out["img_medr"] == 2.0


def test_video_names_follow_blip():
    s = np.eye(12) + 0.01 * np.arange(12)  # the diagonal wins except where a later column is larger
    out = video_text_recall(s, s.T.copy(), list(range(12)), list(range(12)))
    assert {"vid_r1", "vid_r5", "vid_r10", "vid_r_mean", "vid_mdR", "txt_r1", "r_mean"} <= out.keys()
    assert "img_r1" not in out and "vid_medr" not in out
    assert out["vid_r1"] == 100.0 and out["vid_mdR"] == 1.0


@pytest.mark.parametrize(
    "i2t, t2i, img2txt, txt2img, match",
    [
        (np.zeros((2, 3)), np.zeros((2, 3)), [[0], [1]], [0, 1, 0], "expected \\(3, 2\\)"),
        (np.zeros((2, 3)), np.zeros((3, 2)), [[0]], [0, 1, 0], "2 query rows"),
        (np.zeros((2, 3)), np.zeros((3, 2)), [[0], []], [0, 1, 0], "gt\\[1\\] is empty"),
        (np.zeros((2, 3)), np.zeros((3, 2)), [[0], [3]], [0, 1, 0], "index 3"),
        (np.zeros((2, 3)), np.zeros((3, 2)), [[0], [1]], [0, 1, 2], "gt\\[2\\] holds index 2"),
        (np.full((2, 3), np.nan), np.zeros((3, 2)), [[0], [1]], [0, 1, 0], "NaN"),
        (np.zeros(3), np.zeros((3, 2)), [[0], [1]], [0, 1, 0], "2-D"),
        (np.zeros((0, 3)), np.zeros((3, 0)), [], [0, 1, 0], "no query rows"),
    ],
)
def test_bad_inputs(i2t, t2i, img2txt, txt2img, match):
    with pytest.raises(DataError, match=match):
        i2t_t2i_recall(i2t, t2i, img2txt, txt2img)


def test_large_matrix_is_fast():
    import time

    rng = np.random.default_rng(1)
    s = rng.random((1000, 5000), dtype=np.float32)
    start = time.perf_counter()
    ranks = retrieval_ranks(s, [list(range(5 * i, 5 * i + 5)) for i in range(1000)])
    assert time.perf_counter() - start < 2.0
    assert ranks.shape == (1000,) and ranks.min() >= 0 and ranks.max() <= 4995


# -- BLIP's tie rule -----------------------------------------------------------------------------------
def _blip_rank(row, gts):
    """BLIP's rule written out: position in ``argsort(score)[::-1]``, the sort made stable."""
    order = np.argsort(row, kind="stable")[::-1]
    return min(int(np.where(order == g)[0][0]) for g in gts)


def test_blip_tie_rule_matches_reversed_stable_argsort():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 4, (40, 30)).astype(np.float32)  # many ties
    gt = [list(rng.choice(30, size=1 + q % 3, replace=False)) for q in range(40)]
    assert retrieval_ranks(s, gt, ties="blip").tolist() == [_blip_rank(r, g) for r, g in zip(s, gt)]


def test_tie_rules_differ_at_small_k():
    """2 images x 12 texts, ITM re-ranking kept k=3. Image 0's true text (11) fell outside its top 3 into
    BLIP's -100 fill: BLIP's rule puts the highest index first among the 9 tied texts (rank 3, inside R@5),
    the pessimistic rule behind all of them (rank 11, outside R@10)."""
    i2t = np.full((2, 12), -100.0)
    i2t[0, [1, 2, 3]] = [3.0, 2.0, 1.0]
    i2t[1, [0, 4, 5]] = [3.0, 2.0, 1.0]
    img2txt = [[11], [0]]
    txt2img = [1 if t in (0, 4, 5) else 0 for t in range(12)]
    t2i = np.array([[0.0, 1.0] if g else [1.0, 0.0] for g in txt2img])
    assert retrieval_ranks(i2t, img2txt, ties="blip").tolist() == [3, 0] == [_blip_rank(r, g) for r, g in zip(i2t, img2txt)]
    assert retrieval_ranks(i2t, img2txt).tolist() == [11, 0]
    blip = i2t_t2i_recall(i2t, t2i, img2txt, txt2img, ties="blip")
    pess = i2t_t2i_recall(i2t, t2i, img2txt, txt2img, ties="pessimistic")
    assert (blip["txt_r1"], blip["txt_r5"], blip["txt_r10"]) == (50.0, 100.0, 100.0)
    assert (pess["txt_r1"], pess["txt_r5"], pess["txt_r10"]) == (50.0, 50.0, 50.0)


def test_blip_retrieval_projects_use_blips_tie_rule():
    from pathlib import Path

    from lavislite.common.config import build_run_config

    projects = Path(__file__).resolve().parents[2] / "projects" / "blip"
    found = 0
    for path in sorted(projects.rglob("*.yaml")):
        cfg = build_run_config(path, [])
        if cfg.run.task in ("retrieval", "video_retrieval"):
            assert cfg.run.tie_rule == "blip", path
            found += 1
    assert found == 6
