"""Benchmark: CapFilt bootstrapping throughput, batched vs a per-image loop of the same models.

Full-size captioner (``blip_caption`` base_coco: ViT-B/16 @ 384 + BERT-base decoder) and filter
(``blip_image_text_matching`` base: ViT-B/16 @ 384 + ITM encoder), random weights, a BERT-sized synthetic
vocabulary; one webdataset shard of ``--images`` images (256 px JPEGs, one web alt-text each). Timed:
:func:`lavislite.capfilt.pipeline.process_shard` (decode, nucleus caption, ITM-score the web and synthetic
texts, write the output shard) with ``run.batch_size=--batch`` vs the same call with batch size 1 (the
per-image loop: one image through the captioner, then its texts through the filter), interleaved.

    python bench/capfilt.py [--images 32] [--batch 32] [--repeats 1] [--quick]
"""

from __future__ import annotations

import io
import sys
import tarfile
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


def write_shard(path: Path, n: int, size: int) -> None:
    rng = np.random.default_rng(0)
    with tarfile.open(path, "w") as tar:
        for i in range(n):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, format="JPEG", quality=90)
            for name, data in ((f"{i:05d}.jpg", buf.getvalue()), (f"{i:05d}.txt", b"w1 w2 w3 w4 w5 w6 w7 w8")):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def main(argv: list[str] | None = None) -> dict:
    p = C.parser(__doc__, repeats=1, batch=32)
    p.add_argument("--images", type=int, default=32)
    args = p.parse_args(argv)
    device = C.setup(args)
    from lavislite.capfilt import load_config
    from lavislite.capfilt.models import Captioner, Filter
    from lavislite.capfilt.pipeline import process_shard
    from lavislite.capfilt.shards import list_shards

    n = 4 if args.quick else args.images
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        C.synthetic_tokenizer(tmp / "vocab")
        write_shard(tmp / "web.tar", n, 256)
        random = {"load_finetuned": False, "load_pretrained": False}
        if args.quick:
            random.update(image_size=64, vit_overrides={"embed_dim": 64, "depth": 2, "num_heads": 4},
                          med_overrides={"hidden_size": 64, "encoder_width": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                                         "num_attention_heads": 4}, **{"preprocess.vis_processor.eval.image_size": 64})
        spec = {"tokenizer": str(tmp / "vocab"), "options": random}
        cfg = load_config({
            "input": {"shards": [str(tmp / "web.tar")]},
            "captioner": {"model": "blip_caption:base_coco", **spec}, "filter": {"model": "blip_image_text_matching:base", **spec},
            "generation": {"method": "nucleus", "num_captions": 1, "max_length": 30, "min_length": 5},
            "output": {"dir": str(tmp / "out"), "formats": ["wds"]},
            "run": {"batch_size": args.batch, "device": str(device), "progress": False},
        })
        captioner, flt = Captioner(cfg, device), Filter(cfg, device)
        shard = list_shards(cfg.shards, (), 1)[0]
        loop_cfg = replace(cfg, batch_size=1, output_dir=tmp / "out_loop")
        t = C.interleaved({"per_image_loop": lambda: process_shard(shard, loop_cfg, captioner, flt),
                           "lavislite": lambda: process_shard(shard, cfg, captioner, flt)}, args.repeats, args.warmup, device)
        stats = t["lavislite"]["output"]
        result = {
            "quick": args.quick, "images": n, "batch": args.batch, "repeats": args.repeats, "warmup": args.warmup,
            "image_size": 64 if args.quick else 384, "captioner": "blip_caption base_coco (random weights)",
            "filter": "blip_image_text_matching base (random weights)", "generation": "nucleus top_p 0.9, 1 caption, max_length 30",
            "peer": "per-image loop of the same models (process_shard with batch size 1)",
            "peer_time": C.side(t["per_image_loop"], n), "lavislite_time": C.side(t["lavislite"], n),
            "ratio": round(t["per_image_loop"]["median_s"] / t["lavislite"]["median_s"], 2),
            "texts_scored": stats["texts_in"] + stats["synthetic_in"], "memory_how": C.memory_how(device),
        }
    C.write("capfilt", result, args.out)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
