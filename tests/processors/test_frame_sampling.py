import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lavislite.common.errors import DataError
from lavislite.processors.frame_sampling import STRATEGIES, sample_frame_indices


@pytest.mark.parametrize("num_frames", [4, 8, 16])
def test_uniform_is_blips_numpy_arange(num_frames):
    for vlen in range(1, 301):
        blip = np.arange(0, vlen, vlen / num_frames, dtype=int)
        assert sample_frame_indices(vlen, num_frames, "uniform") == blip.tolist(), vlen


def test_uniform_equals_numpy_prefix_for_other_counts():
    # for e.g. T=7 BLIP's float arange sometimes yields T+1 values; its first T always match ours
    for num_frames in (3, 5, 7, 11, 12):
        for vlen in range(1, 301):
            blip = np.arange(0, vlen, vlen / num_frames, dtype=int)[:num_frames]
            assert sample_frame_indices(vlen, num_frames, "uniform") == blip.tolist()


def test_uniform_is_not_floor_of_scaled_index():
    assert sample_frame_indices(10, 4, "uniform") == [0, 2, 4, 6]  # floor(i*10/4) would be [0, 2, 5, 7]
    assert sample_frame_indices(3, 8, "uniform") == [0] * 8  # fewer frames than asked: repeats, as BLIP


def test_middle_values():
    assert sample_frame_indices(10, 4, "middle") == [1, 3, 6, 8]
    assert sample_frame_indices(8, 8, "middle") == list(range(8))
    assert sample_frame_indices(3, 6, "middle") == [0, 0, 1, 1, 2, 2]
    assert sample_frame_indices(20, 2, "middle", start=10) == [12, 17]


def test_rand_one_per_segment_and_covers_it():
    rng = np.random.default_rng(0)
    seen = [set() for _ in range(4)]
    for _ in range(400):
        idx = sample_frame_indices(100, 4, "rand", rng=rng)
        for i, v in enumerate(idx):
            assert 25 * i <= v < 25 * (i + 1)
            seen[i].add(v)
    assert all(len(s) == 25 for s in seen)  # every frame of every segment can be drawn


def test_headtail_halves():
    rng = np.random.default_rng(1)
    for _ in range(100):
        idx = sample_frame_indices(50, 7, "headtail", rng=rng)
        assert all(i < 25 for i in idx[:3]) and all(25 <= i < 50 for i in idx[3:])
        assert len(set(idx)) == 7  # halves long enough: drawn without replacement
    draws = {tuple(sample_frame_indices(50, 4, "headtail", rng=rng)) for _ in range(20)}
    assert len(draws) > 1  # random, unlike LAVIS's linspace
    assert sample_frame_indices(1, 4, "headtail", rng=rng) == [0, 0, 0, 0]


def test_default_rng_follows_torch_seed():
    torch.manual_seed(3)
    a = sample_frame_indices(1000, 8, "rand")
    torch.manual_seed(3)
    assert sample_frame_indices(1000, 8, "rand") == a


def test_bad_inputs():
    for vlen in (0, -3):
        with pytest.raises(DataError, match="frames"):
            sample_frame_indices(vlen, 4, "uniform")
    with pytest.raises(DataError, match="window"):
        sample_frame_indices(10, 4, "uniform", start=10)
    with pytest.raises(ValueError, match="strategy"):
        sample_frame_indices(10, 4, "random")
    with pytest.raises(ValueError, match="num_frames"):
        sample_frame_indices(10, 0, "uniform")


@settings(max_examples=300, deadline=None)
@given(
    vlen=st.integers(1, 3000),
    num_frames=st.integers(1, 64),
    strategy=st.sampled_from(STRATEGIES),
    start_frac=st.floats(0, 0.9),
    len_frac=st.floats(0.01, 1.0),
    seed=st.integers(0, 2**32 - 1),
)
def test_every_strategy_valid_sorted_and_counted(vlen, num_frames, strategy, start_frac, len_frac, seed):
    start = int(start_frac * vlen)
    end = min(vlen, start + max(1, int(len_frac * vlen)))
    idx = sample_frame_indices(vlen, num_frames, strategy, start=start, end=end, rng=np.random.default_rng(seed))
    assert len(idx) == num_frames
    assert all(isinstance(i, int) and start <= i < end for i in idx)
    assert idx == sorted(idx)
