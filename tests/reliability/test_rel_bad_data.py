"""Bad media through a real dataset: odd-but-valid images are converted, bad ones name file and record,
``skip_bad_samples`` skips and counts them. Plus the PIL safety switches stay on after importing everything."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from lavislite.common.errors import DataError
from lavislite.datasets.annotations import load_annotations
from lavislite.datasets.datasets.caption_datasets import ImageTextTrainDataset
from lavislite.processors.image_processors import BlipImageEvalProcessor, load_image
from lavislite.processors.text_processors import BlipCaptionProcessor

S = 16
RNG = np.random.default_rng(0)


def _rgb(w=24, h=20) -> Image.Image:
    return Image.fromarray(RNG.integers(0, 255, (h, w, 3), dtype=np.uint8))


def _write_good(d: Path) -> dict[str, str]:
    """File name -> PIL mode of images that are unusual but valid."""
    _rgb().convert("L").save(d / "gray.png")
    _rgb().convert("RGBA").save(d / "rgba.png")
    _rgb().convert("CMYK").save(d / "cmyk.jpg")
    Image.fromarray(RNG.integers(0, 65535, (20, 24), dtype=np.uint16)).save(d / "deep16.png")
    _rgb().convert("P").save(d / "palette.gif")
    _rgb().convert("1").save(d / "bilevel.bmp")
    _rgb(300, 7).save(d / "wide.webp")
    return {"gray.png": "L", "rgba.png": "RGBA", "cmyk.jpg": "CMYK", "deep16.png": "I;16", "palette.gif": "P", "bilevel.bmp": "1", "wide.webp": "RGB"}


def _write_bad(d: Path) -> list[str]:
    _rgb(64, 64).save(d / "full.jpg", quality=95)
    (d / "truncated.jpg").write_bytes((d / "full.jpg").read_bytes()[:400])
    _rgb(64, 64).save(d / "full.png")
    (d / "truncated.png").write_bytes((d / "full.png").read_bytes()[:-200])
    (d / "notes.jpg").write_text("this is not an image\n")
    (d / "empty.png").write_bytes(b"")
    (d / "folder.jpg").mkdir()
    _rgb(200, 200).save(d / "bomb.png")  # 40k px > 2x the limit set below
    return ["truncated.jpg", "truncated.png", "notes.jpg", "empty.png", "folder.jpg", "bomb.png", "missing.jpg"]


@pytest.fixture
def world(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # a small decompression-bomb limit for a small test
    img = tmp_path / "img"
    img.mkdir()
    good, bad = _write_good(img), _write_bad(img)
    names = list(good) + bad
    ann = tmp_path / "train.json"
    ann.write_text(json.dumps([{"image": n, "caption": f"Picture {i}!"} for i, n in enumerate(names)]))
    return img, ann, good, bad, names


def _dataset(img: Path, ann: Path, skip: bool) -> ImageTextTrainDataset:
    table = load_annotations([ann], ImageTextTrainDataset.FIELDS, skip_bad=skip)
    return ImageTextTrainDataset(table, BlipImageEvalProcessor(image_size=S), BlipCaptionProcessor(), img, skip_bad_samples=skip)


def test_unusual_images_are_converted(world):
    img, ann, good, _, names = world
    for name, mode in good.items():
        with Image.open(img / name) as raw:
            assert raw.mode == mode
        assert load_image(img / name).mode == "RGB"
    ds = _dataset(img, ann, skip=False)
    for i, name in enumerate(names[: len(good)]):
        sample = ds[i]
        assert sample["image"].shape == (3, S, S) and torch.isfinite(sample["image"]).all(), name


def test_each_bad_image_names_the_file_and_the_record(world):
    img, ann, good, bad, _ = world
    ds = _dataset(img, ann, skip=False)
    for k, name in enumerate(bad):
        i = len(good) + k
        with pytest.raises(DataError) as err:
            ds[i]
        msg = str(err.value)
        assert name in msg and f"{ann}, record {i}" in msg and "skip_bad_samples" in msg, msg
    with pytest.raises(DataError, match="decompression bomb"):
        load_image(img / "bomb.png")


def test_skip_bad_samples_skips_and_counts(world):
    img, ann, good, bad, names = world
    ds = _dataset(img, ann, skip=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=0, collate_fn=ds.collater)
    seen = [t for b in loader for t in b["text_input"]]
    assert len(seen) == len(names)  # every index still yields a sample ...
    assert set(seen) <= {f"picture {i}" for i in range(len(good))}  # ... always a good one
    assert ds.num_skipped == len(bad)


def test_pil_safety_switches_stay_on_after_importing_everything():
    """Some libraries flip PIL globals on import; truncated images would then load silently."""
    import importlib
    import pkgutil

    import lavislite

    for mod in pkgutil.walk_packages(lavislite.__path__, "lavislite."):
        if not mod.name.endswith("__main__"):  # __main__ runs the CLI
            importlib.import_module(mod.name)
    for name in ("timm", "transformers", "webdataset", "torchvision"):
        importlib.import_module(name)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    assert Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS <= 89_478_485


def test_mutation_truncated_images_load_silently_without_the_switch(tmp_path, monkeypatch):
    _rgb(64, 64).save(tmp_path / "full.jpg", quality=95)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes((tmp_path / "full.jpg").read_bytes()[:-300])
    with pytest.raises(DataError, match="cut.jpg"):
        load_image(cut)
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    assert load_image(cut).size == (64, 64)  # garbage pixels, no error: what the switch prevents


def test_decompression_bomb_in_a_webdataset_shard_is_a_data_error(tmp_path, monkeypatch):
    from lavislite.datasets.datasets.pretrain_datasets import WebDatasetPretrain

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)
    png = io.BytesIO()
    _rgb(100, 100).save(png, format="PNG")
    shard = tmp_path / "bomb.tar"
    with tarfile.open(shard, "w") as tar:
        for name, data in (("b.png", png.getvalue()), ("b.txt", b"a bomb")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(DataError, match="bomb.tar"):
        list(WebDatasetPretrain(str(shard)))
