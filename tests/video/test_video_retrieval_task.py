"""video_retrieval end to end, and the exactness of the transfer: with one frame per video, video
retrieval is image retrieval on those frames (same score matrices up to float rounding, same ranks and
metrics); batched, chunked, video-grouped re-ranking equals BLIP's per-query loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset

from lavislite.common.errors import DataError
from lavislite.common.registry import registry
from lavislite.tasks.rerank import chunk_candidates
from lavislite.tasks.retrieval import encode_frames
from tests.helpers.video import corrupt_copy, retrieval_yaml, tiny_model

K = 3  # re-rank the top 3 of 6: the -100 fill is exercised


@pytest.fixture(scope="module")
def ret_model(env):
    torch.manual_seed(0)
    return tiny_model("blip_retrieval", env[1], env[2])


def _video_dataset(w, frames: int, skip: bool = False, videos: Path | None = None):
    cfg = registry.get_builder_class("msrvtt_retrieval").default_config()
    cfg.build_info.annotations.test.path = str(Path(w.root) / "annotations" / "msrvtt_test.jsonl")
    cfg.build_info.videos.storage = str(videos or Path(w.root) / "videos")
    cfg.vis_processor.eval.image_size = 32
    cfg.vis_processor.eval.num_frames = frames
    return registry.get_builder_class("msrvtt_retrieval")(cfg, "/nonexistent", skip_bad_samples=skip).build_datasets()["test"]


def _eval(task_name: str, model, dataset, out: Path, **run):
    cls = registry.get_task_class(task_name)
    task = cls(OmegaConf.create({"run": {**cls.RUN_DEFAULTS, "k_test": K, "save_scores": True, **run}}))
    loader = DataLoader(dataset, batch_size=4, collate_fn=dataset.collater)
    out.mkdir(parents=True, exist_ok=True)
    metrics = task.after_evaluation(task.evaluation(model, loader, "test"), "test", out, 0)
    return metrics, np.load(out / "test_scores.npz")


class FramesAsImages(Dataset):
    """The video dataset's single frames as an image retrieval split (text / img2txt / txt2img)."""

    def __init__(self, video_ds) -> None:
        self.v = video_ds
        self.text, self.img2txt, self.txt2img = video_ds.text, video_ds.vid2txt, video_ds.txt2vid

    def __len__(self) -> int:
        return len(self.v)

    def __getitem__(self, i: int) -> dict:
        s = self.v[i]
        return {"image": s["video"][0], "index": i}

    @staticmethod
    def collater(samples):
        return {"image": torch.stack([s["image"] for s in samples]), "index": torch.tensor([s["index"] for s in samples])}


def test_one_frame_video_retrieval_is_image_retrieval(env, ret_model, tmp_path):
    w = env[0]
    vds = _video_dataset(w, frames=1)
    n_tokens = ret_model.encode_image(vds[0]["video"][:1])[0].shape[1]
    # same ITM batching as the image task (1024 pairs per call) so the float results are bit-identical
    vm, vs = _eval("video_retrieval", ret_model, vds, tmp_path / "v", itm_visual_tokens_per_batch=1024 * n_tokens)
    im, is_ = _eval("retrieval", ret_model, FramesAsImages(vds), tmp_path / "i", itm_pairs_per_batch=1024)
    assert np.array_equal(vs["v2t"], is_["i2t"])  # the same ITM calls: bit-identical
    # text -> video groups each video's texts in one call (image path: repeated tokens): rounding only
    np.testing.assert_allclose(vs["t2v"], is_["t2i"], rtol=0, atol=1e-5)
    assert np.array_equal(vs["t2v"] == -100, is_["t2i"] == -100)
    assert np.array_equal(np.argsort(-vs["t2v"], 1, kind="stable"), np.argsort(-is_["t2i"], 1, kind="stable"))
    assert (vs["t2v"] == -100).sum(1).tolist() == [6 - K] * 6  # only the top K re-ranked
    for key, value in im.items():
        assert vm[key.replace("img_medr", "vid_mdR").replace("img_", "vid_")] == pytest.approx(value), key


def _blip_per_query(model, ds, k: int) -> tuple[np.ndarray, np.ndarray]:
    """BLIP's eval_retrieval_video.py loop: one query at a time, video tokens repeated k times."""
    texts = ds.text
    proj_t, ids, atts = model.encode_text(texts, max_length=35)
    t_emb = F.normalize(proj_t, dim=-1)
    vids = torch.stack([ds[i]["video"] for i in range(len(ds))])
    tokens, proj_v = encode_frames(model, vids)
    v_emb = F.normalize(proj_v, dim=-1)
    sims = v_emb @ t_emb.t()
    v2t = torch.full(sims.shape, -100.0)
    for i in range(sims.shape[0]):
        top_sim, top = sims[i].topk(k)
        logit = model.itm_logits(tokens[i].repeat(k, 1, 1), ids[top], atts[top])
        v2t[i, top] = logit + top_sim
    t2v = torch.full(sims.t().shape, -100.0)
    for t in range(sims.shape[1]):
        top_sim, top = sims[:, t].topk(k)
        logit = model.itm_logits(tokens[top], ids[t].repeat(k, 1), atts[t].repeat(k, 1))
        t2v[t, top] = logit + top_sim
    return v2t.numpy(), t2v.numpy()


@pytest.mark.parametrize("pairs", [1, 1024])  # 1 pair per ITM call: the k candidates are chunked
def test_batched_rerank_equals_per_query_loop(env, ret_model, tmp_path, pairs):
    vds = _video_dataset(env[0], frames=3)
    n_tokens = 3 * ret_model.encode_image(vds[0]["video"][:1])[0].shape[1]
    _, got = _eval("video_retrieval", ret_model, vds, tmp_path, itm_visual_tokens_per_batch=pairs * n_tokens)
    with torch.inference_mode():
        ref_v2t, ref_t2v = _blip_per_query(ret_model, vds, K)
    np.testing.assert_allclose(got["v2t"], ref_v2t, atol=1e-5)
    np.testing.assert_allclose(got["t2v"], ref_t2v, atol=1e-5)
    assert (np.argsort(-got["t2v"], 1, kind="stable")[:, :K] == np.argsort(-ref_t2v, 1, kind="stable")[:, :K]).all()


def test_video_embedding_is_normalised_mean_of_unnormalised_frames(ret_model):
    torch.manual_seed(1)
    video = torch.randn(2, 3, 3, 32, 32)
    with torch.inference_mode():
        tokens, proj = encode_frames(ret_model, video, frames_per_forward=4)  # 6 frames in chunks of 4
        frame_tok, frame_proj = ret_model.encode_image(video.flatten(0, 1))
    n = frame_tok.shape[1]
    assert tokens.shape == (2, 3 * n, frame_tok.shape[2])
    assert torch.allclose(tokens[1, n : 2 * n], frame_tok[4], atol=1e-6)  # video 1, frame 1: frame-major concat
    assert torch.allclose(proj, frame_proj.view(2, 3, -1).mean(1), atol=1e-6)


def test_chunk_candidates_bounds_pairs_per_call():
    calls = []

    def fn(q, cand):
        calls.append(cand.numel())
        return (q[:, None] * 100 + cand).reshape(-1).float()

    q, cand = torch.tensor([0, 1]), torch.arange(10).repeat(2, 1)
    out = chunk_candidates(fn, 4)(q, cand)
    assert torch.equal(out, fn(q, cand)) and max(calls[:-1]) <= 4


def test_video_retrieval_end_to_end_from_yaml(env, tmp_path):
    from lavislite.train import run

    w, vdir, n, _ = env
    summary = run(str(retrieval_yaml(tmp_path / "ret.yaml", w, vdir, n)))
    m = summary["metrics"]["test"]
    for key in ("vid_r1", "vid_r5", "vid_r10", "vid_mdR", "txt_r1", "txt_r5", "txt_r10", "r_mean", "agg_metrics"):
        assert key in m
    assert 0 <= m["vid_r1"] <= m["vid_r5"] <= m["vid_r10"] <= 100 and 1 <= m["vid_mdR"] <= 6
    assert m["num_videos"] == 6 and m["num_skipped_videos"] == 0


def test_video_retrieval_bad_video_fails_or_is_left_out(env, tmp_path):
    from lavislite.train import run

    w, vdir, n, _ = env
    videos = corrupt_copy(w, tmp_path)
    cfg = retrieval_yaml(tmp_path / "ret.yaml", w, vdir, n, storage=videos)
    with pytest.raises(DataError, match="shapes_video_0002.mp4"):
        run(str(cfg))
    summary = run(str(cfg), ["run.skip_bad_samples=true"])
    m = summary["metrics"]["test"]
    assert m["num_videos"] == 5 and m["num_skipped_videos"] == 1 and summary["num_skipped_samples"] == 1


