"""video_qa end to end: concatenated frame tokens into predict_answers, accuracy, skipped bad videos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from tests.helpers.video import corrupt_copy, qa_yaml, tiny_model


@pytest.mark.parametrize("method", ["rank", "generate"])
def test_video_qa_end_to_end_from_yaml(env, tmp_path, method):
    from lavislite.train import run

    w, vdir, n, _ = env
    summary = run(str(qa_yaml(tmp_path / "qa.yaml", w, vdir, n)), [f"run.inference_method={method}", "run.max_len=4"])
    m = summary["metrics"]["test"]
    assert m["num_questions"] == 18 and m["num_skipped"] == 0 and 0 <= m["accuracy"] <= 100
    preds = json.loads((Path(summary["run_dir"]) / "test_videoqa_result.json").read_text())
    gts = {q["question_id"]: q["answer"] for q in json.loads((Path(w.root) / "annotations" / "videoqa_test.json").read_text())}
    assert m["accuracy"] == pytest.approx(100 * np.mean([p["answer"] == gts[p["question_id"]] for p in preds]))
    if method == "rank":
        assert {p["answer"] for p in preds} <= set(gts.values()) | set(
            json.loads((Path(w.root) / "annotations" / "videoqa_answer_list.json").read_text())
        )


def test_video_qa_feeds_concatenated_frame_tokens(env):
    """predict_answers gets (B, T*N, D): the frames' ViT tokens concatenated in frame order."""
    from lavislite.tasks.vqa import VideoQATask

    torch.manual_seed(0)
    model = tiny_model("blip_vqa", env[1], env[2])
    seen = {}
    original = model.predict_answers

    def spy(samples, **kw):
        seen["embeds"] = samples["image_embeds"]
        return original(samples, **kw)

    model.predict_answers = spy
    task = VideoQATask(OmegaConf.create({"run": {**VideoQATask.RUN_DEFAULTS, "vit_frames_per_batch": 3}}))
    video = torch.randn(2, 4, 3, 32, 32)
    with torch.inference_mode():
        out = task.valid_step(model, {"video": video, "text_input": ["what color?", "what shape?"], "question_id": [1, 2]})
        per_frame = model.visual_encoder(video.flatten(0, 1))
    n = per_frame.shape[1]
    assert [r["question_id"] for r in out] == [1, 2]
    assert seen["embeds"].shape == (2, 4 * n, per_frame.shape[2])
    assert torch.allclose(seen["embeds"][1, 2 * n : 3 * n], per_frame[6], atol=1e-5)


def test_video_qa_skips_questions_of_bad_videos(env, tmp_path):
    from lavislite.train import run

    w, vdir, n, _ = env
    videos = corrupt_copy(w, tmp_path)
    cfg = qa_yaml(tmp_path / "qa.yaml", w, vdir, n)
    cfg.write_text(cfg.read_text().replace(str(Path(w.root) / "videos"), str(videos)))
    summary = run(str(cfg), ["run.skip_bad_samples=true", "run.inference_method=rank"])
    m = summary["metrics"]["test"]
    assert m["num_questions"] == 15 and m["num_skipped"] == 3  # 3 questions per video
