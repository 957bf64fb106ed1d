"""blip_retrieval: state, queues, momentum, idx-aware ITC targets, hard negatives, training, loading."""

import pytest
import torch
from torch import nn

from lavislite.common.checkpoint import save_checkpoint
from lavislite.models.blip.momentum import (
    alpha_schedule,
    enqueue,
    itc_targets,
    momentum_update,
    sample_negatives,
)

pytestmark = pytest.mark.single_thread  # tiny models: one intra-op thread

CAPTIONS = ["a red circle on the left", "a blue square next to a green triangle", "two small shapes on a table", "an orange triangle"]


def _samples(batch=4, ids=(0, 1, 1, 2), seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(batch, 3, 32, 32, generator=g), "text_input": CAPTIONS[:batch], "image_id": torch.tensor(ids)}


def test_tiny_state_matches_original_layout(build_tiny):
    m = build_tiny("blip_retrieval")
    sd = m.state_dict()
    for key in ("image_queue", "text_queue", "idx_queue", "ptr_queue", "temp", "vision_proj_m.weight", "text_proj_m.weight", "itm_head.weight"):
        assert key in sd
    assert "queue_ptr" not in sd
    assert any(k.startswith("visual_encoder_m.") for k in sd) and any(k.startswith("text_encoder_m.") for k in sd)
    assert m.image_queue.shape == (16, 64) and m.idx_queue.shape == (1, 64) and m.idx_queue.dtype == torch.long
    assert torch.allclose(m.image_queue.norm(dim=0), torch.ones(64))
    assert bool((m.idx_queue == -100).all()) and int(m.ptr_queue) == 0
    assert m.temp.item() == pytest.approx(0.07)
    # momentum copies are frozen and start equal to the online modules
    for online, avg in m.momentum_pairs():
        for p, q in zip(online.parameters(), avg.parameters()):
            assert not q.requires_grad and torch.equal(p, q)


def test_momentum_update_formula():
    torch.manual_seed(0)
    a, b = nn.Linear(3, 2), nn.Linear(3, 2)
    before = [p.detach().clone() for p in b.parameters()]
    momentum_update([(a, b)], 0.9)
    for p, q, q0 in zip(a.parameters(), b.parameters(), before):
        assert torch.allclose(q, 0.9 * q0 + 0.1 * p)


def test_forward_applies_momentum_update_before_momentum_features(build_tiny):
    m = build_tiny("blip_retrieval")
    with torch.no_grad():  # make online and momentum weights differ
        m.vision_proj.weight.add_(1.0)
    w, w_m = m.vision_proj.weight.detach().clone(), m.vision_proj_m.weight.detach().clone()
    m(_samples())
    assert torch.allclose(m.vision_proj_m.weight, 0.995 * w_m + 0.005 * w, atol=1e-6)


def test_enqueue_wraps_around():
    q1, q2 = torch.zeros(2, 5), torch.zeros(1, 5, dtype=torch.long)
    ptr = torch.tensor([3])
    feats = torch.arange(8.0).view(4, 2)
    enqueue([q1, q2], [feats, torch.tensor([[10], [11], [12], [13]])], ptr)
    assert q2.tolist() == [[12, 13, 0, 10, 11]]
    assert torch.equal(q1[:, 3], feats[0]) and torch.equal(q1[:, 1], feats[3])
    assert int(ptr) == 2
    # a batch larger than the queue keeps its newest entries
    enqueue([q2], [torch.arange(7).view(7, 1)], ptr)
    assert q2.tolist() == [[2, 3, 4, 5, 6]] and int(ptr) == 0


def test_forward_fills_queue_with_ids_and_wraps(build_tiny):
    m = build_tiny("blip_retrieval", queue_size=6)
    m(_samples())
    assert int(m.ptr_queue) == 4 and m.idx_queue[0, :4].tolist() == [0, 1, 1, 2]
    m(_samples(ids=(5, 6, 7, 8)))
    assert int(m.ptr_queue) == 2 and m.idx_queue[0].tolist() == [7, 8, 1, 2, 5, 6]


def test_itc_targets_are_idx_aware_including_queue():
    idx = torch.tensor([0, 1, 1, 2])
    queue = torch.tensor([[1, -100, 2, 7]])
    t = itc_targets(4, 4, idx, queue)
    expected = torch.tensor(
        [
            [1, 0, 0, 0, 0, 0, 0, 0],
            [0, 1, 1, 0, 1, 0, 0, 0],
            [0, 1, 1, 0, 1, 0, 0, 0],
            [0, 0, 0, 1, 0, 0, 1, 0],
        ],
        dtype=torch.float,
    )
    assert torch.allclose(t, expected / expected.sum(1, keepdim=True))
    diag = itc_targets(3, 2)
    assert torch.equal(diag, torch.cat([torch.eye(3), torch.zeros(3, 2)], dim=1))


def test_hard_negatives_never_share_the_image_id(build_tiny):
    m = build_tiny("blip_retrieval")
    idx = torch.tensor([[0], [1], [1], [2]])
    feats = nn.functional.normalize(torch.randn(4, 16), dim=-1)
    w_i2t, w_t2i = m._negative_weights({"idx": idx, "image_feat": feats, "text_feat": feats})
    same = idx == idx.t()
    assert bool((w_i2t[same] == 0).all()) and bool((w_t2i[same] == 0).all()) and bool((w_i2t[~same] > 0).all())
    torch.manual_seed(0)
    for _ in range(20):
        picks = sample_negatives(w_i2t)
        assert not bool(same[torch.arange(4), picks].any())
    # a row with no admissible negative falls back to a uniform draw instead of crashing
    assert sample_negatives(torch.zeros(2, 3)).shape == (2,)


def test_alpha_schedule():
    assert alpha_schedule(0.4, {}) == 0.4
    assert alpha_schedule(0.4, {"alpha": 0.1}) == 0.1
    assert alpha_schedule(0.4, {"epoch": 0, "iters": 50, "num_iters_per_epoch": 100}) == pytest.approx(0.1)
    assert alpha_schedule(0.4, {"epoch": 1, "iters": 50, "num_iters_per_epoch": 100}) == pytest.approx(0.3)
    assert alpha_schedule(0.4, {"epoch": 3, "iters": 0, "num_iters_per_epoch": 100}) == pytest.approx(0.4)


def test_training_overfits_a_tiny_batch(build_tiny):
    m = build_tiny("blip_retrieval")
    m.train()
    samples = _samples()
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=2e-3)
    losses = []
    for _ in range(8):
        out = m(samples)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.scalars())
    assert set(losses[0]) == {"loss", "loss_itc", "loss_itm"}
    first = sum(x["loss"] for x in losses[:3]) / 3
    last = sum(x["loss"] for x in losses[-3:]) / 3
    assert last < first - 0.3, losses
    assert 0.001 <= m.temp.item() <= 0.5


def test_bad_image_ids_are_refused(build_tiny):
    from lavislite.common.errors import DataError

    m = build_tiny("blip_retrieval")
    s = _samples()
    s["image_id"] = ["a", "b", "c", "d"]
    with pytest.raises(DataError, match="image_id"):
        m(s)
    del s["image_id"]
    with pytest.raises(DataError, match="image_id"):
        m(s)


def test_lavis_queue_ptr_name_loads_and_resized_queue_drops_pointer(build_tiny, tmp_path):
    src = build_tiny("blip_retrieval", seed=1)
    sd = dict(src.state_dict())
    sd["queue_ptr"] = torch.tensor([8])
    del sd["ptr_queue"]
    dst = build_tiny("blip_retrieval", seed=2)
    report = dst.load_checkpoint(sd)
    assert report.missing == [] and report.unexpected == []
    assert int(dst.ptr_queue) == 8
    assert torch.equal(dst.text_encoder_m.embeddings.word_embeddings.weight, src.text_encoder_m.embeddings.word_embeddings.weight)
    # another queue size: queues are left as initialised, and so is the pointer that indexed them
    small = build_tiny("blip_retrieval", seed=3, queue_size=8)
    report = small.load_checkpoint(sd)
    assert {k for k, _, _ in report.mismatched} == {"image_queue", "text_queue"}  # idx_queue dropped with the pointer
    assert set(report.missing) == {"image_queue", "text_queue", "idx_queue", "ptr_queue"}
    assert int(small.ptr_queue) == 0


def test_checkpoint_without_momentum_keys_resets_momentum_copies(build_tiny, tmp_path):
    src = build_tiny("blip_retrieval", seed=1)
    sd = {k: v for k, v in src.state_dict().items() if "_m." not in k}
    path = save_checkpoint(sd, tmp_path / "no_momentum.pth")
    dst = build_tiny("blip_retrieval", seed=2)
    dst.load_checkpoint(path)
    for online, avg in dst.momentum_pairs():
        for p, q in zip(online.parameters(), avg.parameters()):
            assert torch.equal(p, q)
    assert torch.equal(dst.vision_proj_m.weight, src.vision_proj.weight)


def test_official_round_trip(build_tiny, tmp_path):
    a = build_tiny("blip_retrieval", seed=1)
    a(_samples())  # move queues and pointer
    path = save_checkpoint(a, tmp_path / "ret.pth")
    b = build_tiny("blip_retrieval", seed=2)
    report = b.load_checkpoint(path, strict=True)
    assert report.clean
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
