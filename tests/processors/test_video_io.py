import sys

import pytest
import torch

from lavislite.common.errors import ConfigError, DataError
from lavislite.processors import load_processor, read_frames, video_io
from lavislite.processors.image_processors import CLIP_MEAN, CLIP_STD

BACKENDS = ["decord", "opencv"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_reads_rgb_frames(videos, backend):
    frames = read_frames(videos["clip"], list(range(20)), backend=backend)
    assert frames.shape == (20, 3, 64, 64) and frames.dtype == torch.uint8
    bg = frames[:, :, 40:, :30].float().mean(dim=(2, 3))  # a patch the moving shapes never reach
    for i in range(20):
        assert bg[i].argmax().item() == i % 3, (i, bg[i])  # red, green, blue backgrounds in RGB order
    assert bg[0, 0] > 180 and bg[0, 1] < 60 and bg[0, 2] < 60


@pytest.mark.parametrize("size", [None, 32, 40])
def test_decord_and_opencv_agree(videos, size):
    a = read_frames(videos["clip"], list(range(20)), size=size, backend="decord").float()
    b = read_frames(videos["clip"], list(range(20)), size=size, backend="opencv").float()
    assert a.shape == b.shape
    diff = (a - b).abs()
    limit = 1.0 if size is None else 4.0  # same decoder; resizing differs in the chroma planes only
    assert diff.mean() < limit, diff.mean()


def test_non_square_source_resized_square(videos):
    for backend in BACKENDS:
        frames = read_frames(videos["wide"], (4, "uniform"), size=32, backend=backend)
        assert frames.shape == (4, 3, 32, 32)


def test_uniform_sampling_reads_blips_indices(videos):
    sampled = read_frames(videos["clip"], (8, "uniform"), backend="decord")
    explicit = read_frames(videos["clip"], [0, 2, 4, 6, 8, 10, 12, 14], backend="decord")
    assert torch.equal(sampled, explicit)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fewer_frames_than_asked_repeats(videos, backend):
    frames = read_frames(videos["short"], (8, "uniform"), size=32, backend=backend)
    assert frames.shape == (8, 3, 32, 32)
    assert all(torch.equal(frames[0], f) for f in frames)  # all index 0, as BLIP
    middle = read_frames(videos["short"], (6, "middle"), backend=backend)
    assert torch.equal(middle[0], middle[1]) and not torch.equal(middle[1], middle[2])


def test_time_window(videos):
    # 10 fps: [1.0 s, 1.5 s] covers frames 10..14
    window = read_frames(videos["clip"], (5, "uniform"), start_time=1.0, end_time=1.5, backend="opencv")
    assert torch.equal(window, read_frames(videos["clip"], [10, 11, 12, 13, 14], backend="opencv"))
    with pytest.raises(DataError, match="holds no frames"):
        read_frames(videos["clip"], (4, "uniform"), start_time=5.0)


@pytest.mark.parametrize("backend", ["auto", "decord", "opencv"])
@pytest.mark.parametrize("kind, words", [("missing", "not found"), ("empty", "0 bytes"), ("corrupt", ""), ("zero_frames", "")])
def test_bad_files_name_the_file(videos, backend, kind, words):
    path = videos[kind]
    with pytest.raises(DataError, match=path.name) as info:
        read_frames(path, (4, "uniform"), backend=backend)
    assert words in str(info.value)


def test_reader_reporting_no_frames_is_an_error(videos, monkeypatch):
    real_init = video_io._OpenCVReader.__init__

    def no_frames(self, path, size):
        real_init(self, path, size)
        self.vlen = 0

    monkeypatch.setattr(video_io._OpenCVReader, "__init__", no_frames)
    with pytest.raises(DataError, match="clip.mp4 has no frames"):
        read_frames(videos["clip"], (4, "uniform"), backend="opencv")


def test_auto_handles_sizes_decord_cannot(videos):
    # decord 0.6 fails get_batch at some output sizes (48 on a 64 px source); auto reads via OpenCV
    assert read_frames(videos["clip"], (4, "uniform"), size=48).shape == (4, 3, 48, 48)


def test_out_of_range_indices(videos):
    with pytest.raises(DataError, match=r"outside \[0, 20\).*clip.mp4"):
        read_frames(videos["clip"], [0, 25])


def test_bad_options(videos):
    with pytest.raises(ConfigError, match="backend"):
        read_frames(videos["clip"], [0], backend="pyav")
    with pytest.raises(ConfigError, match="size"):
        read_frames(videos["clip"], [0], size=0)


def test_auto_falls_back_when_decord_missing(videos, monkeypatch):
    expected = read_frames(videos["clip"], (4, "uniform"), size=32, backend="opencv")
    monkeypatch.setitem(sys.modules, "decord", None)  # makes `import decord` raise ImportError
    assert torch.equal(read_frames(videos["clip"], (4, "uniform"), size=32), expected)
    with pytest.raises(ConfigError, match="decord is not installed"):
        read_frames(videos["clip"], [0], backend="decord")


def test_auto_falls_back_when_decord_fails_to_decode(videos, monkeypatch):
    def broken(self, indices):
        raise RuntimeError("DECORDError: The size must exactly match")

    monkeypatch.setattr(video_io._DecordReader, "get", broken)
    expected = read_frames(videos["clip"], [1, 5], size=32, backend="opencv")
    assert torch.equal(read_frames(videos["clip"], [1, 5], size=32), expected)
    with pytest.raises(DataError, match="clip.mp4"):
        read_frames(videos["clip"], [1, 5], backend="decord")


def test_opencv_header_overcounting_frames_is_resampled(videos, monkeypatch):
    real_init = video_io._OpenCVReader.__init__

    def overcount(self, path, size):
        real_init(self, path, size)
        self.vlen = 40  # the container claims twice as many frames as the stream holds

    monkeypatch.setattr(video_io._OpenCVReader, "__init__", overcount)
    frames = read_frames(videos["clip"], (8, "uniform"), backend="opencv")
    monkeypatch.undo()
    assert torch.equal(frames, read_frames(videos["clip"], [0, 2, 4, 6, 8, 10, 12, 14], backend="opencv"))


def test_video_eval_processor(videos):
    proc = load_processor("blip_video_eval", {"name": "blip_video_eval", "num_frames": 4, "image_size": 32})
    out = proc(videos["clip"])
    assert out.shape == (4, 3, 32, 32) and out.dtype == torch.float32
    raw = read_frames(videos["clip"], [0, 5, 10, 15], size=32).float() / 255
    ref = (raw - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(out, ref)
    with pytest.raises(ConfigError, match="strategy"):
        load_processor("blip_video_eval", {"strategy": "rand"})
    with pytest.raises(DataError, match="corrupt.mp4"):
        proc(videos["corrupt"])


def test_video_train_processor(videos):
    proc = load_processor("blip_video_train", {"num_frames": 4, "image_size": 32, "backend": "opencv"})
    torch.manual_seed(0)
    a = proc(videos["clip"])
    torch.manual_seed(0)
    b = proc(videos["clip"])
    assert a.shape == (4, 3, 32, 32)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the flip is decided once per clip: every frame is flipped, or none
    unflipped = load_processor("blip_video_train", {"num_frames": 20, "image_size": 32, "horizontal_flip": False})
    ref = unflipped(videos["clip"])  # 20 of 20 frames: every index, whatever the strategy
    flips = set()
    for seed in range(6):
        torch.manual_seed(seed)
        out = load_processor("blip_video_train", {"num_frames": 20, "image_size": 32})(videos["clip"])
        if torch.equal(out, ref):
            flips.add(False)
        else:
            torch.testing.assert_close(out, ref.flip(-1), rtol=0, atol=0)
            flips.add(True)
    assert flips == {True, False}
    headtail = load_processor("blip_video_train", {"num_frames": 4, "image_size": 32, "strategy": "headtail"})
    assert headtail(videos["clip"]).shape == (4, 3, 32, 32)
