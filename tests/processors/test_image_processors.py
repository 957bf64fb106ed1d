import numpy as np
import pytest
import torch
from PIL import Image

from lavislite.common.errors import ConfigError, DataError
from lavislite.processors import load_image, load_processor
from lavislite.processors.image_processors import CLIP_MEAN, CLIP_STD, to_rgb


def _rgb_image(w=50, h=40, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _by_hand(img, size, mean=CLIP_MEAN, std=CLIP_STD):
    arr = np.asarray(img.resize((size, size), Image.BICUBIC), dtype=np.float32) / 255.0
    x = torch.from_numpy(arr).permute(2, 0, 1)
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def test_eval_equals_pil_bicubic_and_normalise():
    img = _rgb_image()
    out = load_processor("blip_image_eval", {"image_size": 32})(img)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32
    torch.testing.assert_close(out, _by_hand(img, 32), atol=1e-6, rtol=0)


def test_eval_mean_std_overridable():
    img = _rgb_image()
    cfg = {"image_size": 24, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    out = load_processor("blip_image_eval", cfg)(img)
    torch.testing.assert_close(out, _by_hand(img, 24, (0.5,) * 3, (0.25,) * 3), atol=1e-6, rtol=0)
    with pytest.raises(ConfigError):
        load_processor("blip_image_eval", {"mean": [0.5, 0.5]})
    with pytest.raises(ConfigError, match="image_siz"):
        load_processor("blip_image_eval", {"image_siz": 24})


def _mode_images():
    rgb = _rgb_image()
    palette = rgb.convert("P")
    palette_t = palette.copy()
    palette_t.info["transparency"] = 0
    grey16 = Image.fromarray(np.array([[0, 32768, 65535, 1000]] * 4, dtype=np.uint16))
    return {
        "1": rgb.convert("1"),
        "L": rgb.convert("L"),
        "LA": rgb.convert("LA"),
        "P": palette,
        "P+transparency": palette_t,
        "RGBA": rgb.convert("RGBA"),
        "CMYK": rgb.convert("CMYK"),
        "YCbCr": rgb.convert("YCbCr"),
        "I;16": grey16,
        "I": Image.fromarray(np.array([[0, 100, 200, 255]] * 4, dtype=np.int32)),
        "F": Image.fromarray(np.array([[0.0, 0.5, 1.0, 0.25]] * 4, dtype=np.float32)),
        "RGB": rgb,
    }


@pytest.mark.parametrize("mode", list(_mode_images()))
def test_every_mode_converted(mode):
    img = _mode_images()[mode]
    rgb = to_rgb(img)
    assert rgb.mode == "RGB" and rgb.size == img.size
    assert load_processor("blip_image_eval", {"image_size": 16})(img).shape == (3, 16, 16)


def test_high_bit_depth_is_scaled_not_clipped():
    imgs = _mode_images()
    assert np.asarray(to_rgb(imgs["I;16"]))[0, :, 0].tolist() == [0, 128, 255, 4]  # PIL alone: [0, 255, 255, 255]
    assert np.asarray(to_rgb(imgs["I"]))[0, :, 0].tolist() == [0, 100, 200, 255]  # already 8-bit range
    assert np.asarray(to_rgb(imgs["F"]))[0, :, 0].tolist() == [0, 128, 255, 64]
    rgba = _mode_images()["RGBA"]
    assert np.array_equal(np.asarray(to_rgb(rgba)), np.asarray(rgba)[..., :3])  # alpha dropped, as BLIP


def test_file_paths(tmp_path):
    img = _rgb_image()
    path = tmp_path / "img.png"
    img.save(path)
    proc = load_processor("blip_image_eval", {"image_size": 16})
    torch.testing.assert_close(proc(str(path)), proc(img))
    torch.testing.assert_close(proc(path), proc(img))
    missing = tmp_path / "nope.jpg"
    with pytest.raises(DataError, match="nope.jpg"):
        proc(missing)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    with pytest.raises(DataError, match="corrupt.jpg"):
        proc(corrupt)
    truncated = tmp_path / "truncated.jpg"
    img.save(tmp_path / "full.jpg")
    truncated.write_bytes((tmp_path / "full.jpg").read_bytes()[:300])
    with pytest.raises(DataError, match="truncated.jpg"):
        proc(truncated)
    with pytest.raises(DataError, match="PIL image or an image file path"):
        proc(12)


def test_decompression_bomb_limit_kept(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    _rgb_image(64, 64).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64*64 > 2x the limit: PIL refuses
    with pytest.raises(DataError, match="big.png.*decompression bomb"):
        load_image(path)


def test_train_shape_dtype_and_determinism():
    img = _rgb_image(80, 60)
    proc = load_processor("blip_image_train", {"image_size": 32})
    torch.manual_seed(0)
    a = proc(img)
    torch.manual_seed(0)
    b = proc(img)
    assert a.shape == (3, 32, 32) and a.dtype == torch.float32
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    outs = {proc(img).sum().item() for _ in range(5)}
    assert len(outs) > 1  # it is random across calls


def test_train_options():
    img = _rgb_image(80, 60)
    proc = load_processor("blip_image_train", {"image_size": 24, "min_scale": 0.2, "randaugment": False})
    assert "RandomAugment" not in repr(proc)
    assert proc(img).shape == (3, 24, 24)
    with pytest.raises(ConfigError, match="min_scale"):
        load_processor("blip_image_train", {"min_scale": 0.0})
