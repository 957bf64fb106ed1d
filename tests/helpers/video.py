"""Helpers of the video tests: a quick shapes world, an offline tokenizer, tiny BLIP models, project yamls."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def world(root: Path):
    from lavislite.demo import generate_world

    return generate_world(root, quick=True)


def vocab(w: Any, out: Path) -> tuple[Path, int]:
    """A WordPiece vocab over the world's video captions, questions and answers; (dir, tokenizer size)."""
    from lavislite.models.tokenizer import build_wordpiece_vocab, init_tokenizer

    ann = Path(w.root) / "annotations"
    texts = [json.loads(line)["caption"] for line in (ann / "msrvtt_test.jsonl").read_text().splitlines() if line.strip()]
    texts += [q["question"] for q in json.loads((ann / "videoqa_test.json").read_text())]
    texts += json.loads((ann / "videoqa_answer_list.json").read_text())
    if not (out / "vocab.txt").is_file():
        build_wordpiece_vocab(texts * 3, 200, out)
    return out, len(init_tokenizer(out))


def tiny_model(arch: str, vocab_dir: Path, n_vocab: int):
    from lavislite.common.config import model_type_config
    from lavislite.common.registry import registry
    from lavislite.models.tokenizer import init_tokenizer

    cls = registry.get_model_class(arch)
    cfg = model_type_config(cls, "tiny", {"med_overrides": {"vocab_size": n_vocab}})
    return cls.from_config(cfg.model, tokenizer=init_tokenizer(vocab_dir)).eval()


def write_video(path: Path, n_frames: int = 12, size: int = 48, color=(0, 0, 255), fps: int = 8) -> Path:
    """An mp4v clip of a coloured square moving left to right (BGR colour, as OpenCV writes)."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size, size))
    for t in range(n_frames):
        frame = np.full((size, size, 3), 30, dtype=np.uint8)
        x = int(t * (size - 12) / max(n_frames - 1, 1))
        frame[size // 2 - 6 : size // 2 + 6, x : x + 12] = color
        vw.write(frame)
    vw.release()
    return path


def retrieval_yaml(path: Path, w: Any, vocab_dir: Path, n_vocab: int, *, frames: int = 4, extra_run: str = "", builder: str = "msrvtt_retrieval",
                   ann: Path | None = None, storage: Path | None = None) -> Path:
    ann = ann or Path(w.root) / "annotations" / "msrvtt_test.jsonl"
    storage = storage or Path(w.root) / "videos"
    path.write_text(f"""
model: {{arch: blip_retrieval, model_type: tiny, tokenizer: {vocab_dir}, med_overrides: {{vocab_size: {n_vocab}}}}}
datasets:
  {builder}:
    build_info:
      annotations: {{test: {{url: null, path: {ann}}}}}
      videos: {{storage: {storage}}}
    vis_processor:
      eval: {{name: blip_video_eval, num_frames: {frames}, image_size: 32}}
run: {{task: video_retrieval, evaluate: true, test_splits: [test], k_test: 4, batch_size_eval: 4, num_workers: 0,
      output_dir: {path.parent / 'out'}, device: cpu, save_scores: true {extra_run}}}
""")
    return path


def qa_yaml(path: Path, w: Any, vocab_dir: Path, n_vocab: int, *, frames: int = 4, extra_run: str = "") -> Path:
    ann = Path(w.root) / "annotations"
    path.write_text(f"""
model: {{arch: blip_vqa, model_type: tiny, tokenizer: {vocab_dir}, med_overrides: {{vocab_size: {n_vocab}}}}}
datasets:
  msrvtt_qa:
    build_info:
      annotations: {{test: {{path: {ann}/videoqa_test.json}}}}
      answer_list: {{path: {ann}/videoqa_answer_list.json}}
      videos: {{storage: {Path(w.root) / 'videos'}}}
    vis_processor:
      eval: {{name: blip_video_eval, num_frames: {frames}, image_size: 32}}
run: {{task: video_qa, evaluate: true, test_splits: [test], batch_size_eval: 4, num_workers: 0,
      output_dir: {path.parent / 'out'}, device: cpu {extra_run}}}
""")
    return path


def corrupt_copy(w: Any, tmp_path: Path) -> Path:
    """A copy of the world's videos in which shapes_video_0002.mp4 is garbage."""
    import shutil

    videos = tmp_path / "videos"
    shutil.copytree(Path(w.root) / "videos", videos)
    (videos / "shapes_video_0002.mp4").write_bytes(b"\x00garbage" * 100)
    return videos
