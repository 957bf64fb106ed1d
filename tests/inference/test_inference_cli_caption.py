"""``lavislite caption`` on a tiny checkpoint: outputs, folders, shards, resume, bad images, load errors."""

import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from lavislite.cli import main
from tests.helpers.inference import vocab_option, write_images

FAST = ["--max-length", "8", "--min-length", "2", "--beams", "2", "--batch-size", "2", "-q"]


def lines(path):
    return [json.loads(x) for x in Path(path).read_text().splitlines()]


@pytest.fixture()
def count_generate(monkeypatch):
    """Counts images passed to BlipCaption.generate."""
    from lavislite.models.blip.caption import BlipCaption

    seen = []
    orig = BlipCaption.generate

    def counting(self, samples, **kw):
        seen.append(samples["image"].shape[0])
        return orig(self, samples, **kw)

    monkeypatch.setattr(BlipCaption, "generate", counting)
    return seen


def test_jsonl_file_folder_and_resume(tmp_path, model_args, count_generate, capsys):
    imgs = write_images(tmp_path / "imgs", 5)
    out = tmp_path / "caps.jsonl"
    assert main(["caption", str(tmp_path / "imgs"), "-o", str(out), *FAST, *model_args("blip_caption")]) == 0
    recs = lines(out)
    assert [r["id"] for r in recs] == [os.path.normpath(p) for p in imgs]
    assert all(isinstance(r["caption"], str) and r["caption"].strip() for r in recs)
    assert sum(count_generate) == 5 and max(count_generate) <= 2  # batched
    # a re-run computes nothing; a new image is the only work of the third run
    count_generate.clear()
    assert main(["caption", str(tmp_path / "imgs"), "-o", str(out), *FAST, *model_args("blip_caption")]) == 0
    assert count_generate == [] and lines(out) == recs
    write_images(tmp_path / "imgs", 6)  # rewrites the same 5 + adds img05
    assert main(["caption", str(tmp_path / "imgs"), "-o", str(out), *FAST, *model_args("blip_caption")]) == 0
    assert count_generate == [1] and len(lines(out)) == 6
    # --overwrite recomputes all
    count_generate.clear()
    assert main(["caption", str(tmp_path / "imgs"), "-o", str(out), "--overwrite", *FAST, *model_args("blip_caption")]) == 0
    assert sum(count_generate) == 6 and [r["caption"] for r in lines(out)][:5] == [r["caption"] for r in recs]


def test_stdout_jsonl_table_and_num_captions(tmp_path, model_args, capsys):
    imgs = write_images(tmp_path, 2)
    argv = ["caption", *map(str, imgs), *FAST, *model_args("blip_caption")]
    assert main(argv) == 0
    recs = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in recs] == [str(p) for p in imgs]
    assert main(argv + ["--format", "table"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["id", "caption"] and set(table[1]) <= {"-", " "}
    assert table[2].startswith(str(imgs[0])) and recs[0]["caption"] in table[2]
    assert main(argv + ["--num-captions", "2"]) == 0
    two = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert all(isinstance(r["caption"], list) and len(r["caption"]) == 2 for r in two)
    assert main(argv + ["--sample", "--seed", "3"]) == 0
    s1 = capsys.readouterr().out
    assert main(argv + ["--sample", "--seed", "3"]) == 0
    assert capsys.readouterr().out == s1  # seeded sampling repeats


def test_corrupt_image_fails_clearly_or_is_skipped(tmp_path, model_args, capsys):
    write_images(tmp_path / "imgs", 3)
    (tmp_path / "imgs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "o.jsonl"
    argv = ["caption", str(tmp_path / "imgs"), "-o", str(out), *FAST, *model_args("blip_caption")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("lavislite caption: error: cannot read image") and "broken.png" in err and "--skip-bad" in err
    assert main(argv + ["--skip-bad", "--num-workers", "1"]) == 0
    assert sorted(Path(r["id"]).name for r in lines(out)) == ["img00.png", "img01.png", "img02.png"]


def test_webdataset_shards(tmp_path, model_args):
    imgs = write_images(tmp_path / "src", 3)
    shard = tmp_path / "shard-000.tar"
    with tarfile.open(shard, "w") as tar:
        for i, p in enumerate(imgs):
            for name, data in ((f"s{i}.png", p.read_bytes()), (f"s{i}.txt", b"ignored")):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    out = tmp_path / "o.jsonl"
    assert main(["caption", str(tmp_path / "shard-{000..000}.tar"), "-o", str(out), *FAST, *model_args("blip_caption")]) == 0
    assert [r["id"] for r in lines(out)] == [f"{shard}#s{i}" for i in range(3)]
    before = out.read_text()
    assert main(["caption", str(shard), "-o", str(out), *FAST, *model_args("blip_caption")]) == 0
    assert out.read_text() == before  # resumed: nothing new


def test_missing_checkpoint_names_path_and_flag(tmp_path, tiny_tokenizer_dir, capsys):
    write_images(tmp_path, 1)
    missing = tmp_path / "nope.pth"
    rc = main(["caption", str(tmp_path), "--model", "blip_caption:tiny", "--checkpoint", str(missing), "--tokenizer", str(tiny_tokenizer_dir)])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert f"--checkpoint {missing}" in err and "not found" in err


def test_offline_weights_say_where_to_put_the_file(tmp_path, tiny_tokenizer_dir, capsys, monkeypatch):
    monkeypatch.setenv("LAVISLITE_OFFLINE", "1")
    monkeypatch.setenv("LAVISLITE_CACHE", str(tmp_path / "cache"))
    write_images(tmp_path / "i", 1)
    url = "https://example.invalid/models/blip_tiny_caption.pth"
    rc = main(["caption", str(tmp_path / "i"), "--model", "blip_caption:tiny", "--tokenizer", str(tiny_tokenizer_dir),
               "--option", "load_finetuned=true", "--option", f"finetuned={url}"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert str(tmp_path / "cache" / "checkpoints" / "blip_tiny_caption.pth") in err  # where to place it
    assert "offline" in err and url in err and "--checkpoint PATH" in err


def test_missing_tokenizer_names_the_flag(tmp_path, ckpt, tiny_tokenizer_dir, capsys):
    write_images(tmp_path, 1)
    # the vocabulary is sized to fit the checkpoint (else the load itself is refused, naming the vocabulary)
    rc = main(["caption", str(tmp_path), "--model", "blip_caption:tiny", "--checkpoint", str(ckpt("blip_caption")),
               *vocab_option(tiny_tokenizer_dir)])
    err = capsys.readouterr().err
    assert rc == 2 and "--tokenizer DIR" in err


def test_wrong_model_kind_is_named(tmp_path, model_args, capsys):
    write_images(tmp_path, 1)
    assert main(["caption", str(tmp_path), *model_args("blip_image_text_matching")]) == 2
    assert "cannot caption" in capsys.readouterr().err
