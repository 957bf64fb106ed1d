"""Benchmark: model load time from a checkpoint file, and import time.

* ``load``: a full-size ``blip_caption`` base_coco model (ViT-B/16 @ 384, random weights) is written as an
  official BLIP checkpoint (``torch.save({"model": state_dict})``, what BLIP/LAVIS publish) and as a
  transformers directory (``save_pretrained``, safetensors) carrying the same weights; timed:
  ``lavislite.load_model("blip_caption", "base_coco", checkpoint=<.pth>)`` vs transformers
  ``BlipForConditionalGeneration.from_pretrained(<dir>)``, interleaved, files in the page cache;
* ``import``: a fresh interpreter per sample: ``import lavislite`` + ``from lavislite.api import load_model``
  vs ``from transformers import BlipForConditionalGeneration`` (median of ``--import-repeats``); also
  records whether importing lavislite pulled in transformers (it must not).

    python bench/load.py [--repeats 3] [--import-repeats 5] [--quick]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

IMPORT_OURS = ("import time; t=time.perf_counter(); import lavislite; from lavislite.api import load_model; "
               "d=time.perf_counter()-t; import sys; print(d, 'transformers' in sys.modules)")
IMPORT_PEER = ("import time; t=time.perf_counter(); from transformers import BlipForConditionalGeneration; "
               "print(time.perf_counter()-t, True)")


def import_times(code: str, n: int) -> tuple[list[float], bool]:
    times, flag = [], False
    for _ in range(n):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
        times.append(float(out[0]))
        flag = out[1] == "True"
    return times, flag


def main(argv: list[str] | None = None) -> dict:
    p = C.parser(__doc__, repeats=3)
    p.add_argument("--import-repeats", type=int, default=5)
    args = p.parse_args(argv)
    device = C.setup(args)
    from transformers import BlipConfig, BlipForConditionalGeneration

    from lavislite.api import load_model

    result: dict = {"repeats": args.repeats, "quick": args.quick, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tok = C.synthetic_tokenizer(tmp / "vocab")
        text = dict(vocab_size=len(tok), bos_token_id=tok.bos_token_id, sep_token_id=tok.sep_token_id,
                    eos_token_id=tok.sep_token_id, pad_token_id=tok.pad_token_id)
        vision = dict(image_size=384, layer_norm_eps=1e-6)
        over = {"tokenizer": str(tmp / "vocab")}
        if args.quick:
            text.update(hidden_size=64, encoder_hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
            vision.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, image_size=64)
            over.update(image_size=64, vit_overrides={"embed_dim": 64, "depth": 2, "num_heads": 4, "mlp_ratio": 2.0},
                        med_overrides={"hidden_size": 64, "encoder_width": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                                       "num_attention_heads": 4})
        torch.manual_seed(0)
        hf = BlipForConditionalGeneration(BlipConfig(text_config=text, vision_config=vision)).eval()
        hf.save_pretrained(tmp / "hf")
        ours = load_model("blip_caption", "base_coco", checkpoint=str(tmp / "hf"), **over)
        ckpt = tmp / "model_base_caption.pth"
        torch.save({"model": ours.state_dict()}, ckpt)
        n_params = sum(t.numel() for t in ours.state_dict().values())
        del hf, ours
        t = C.interleaved(
            {"peer": lambda: BlipForConditionalGeneration.from_pretrained(tmp / "hf"),
             "lavislite": lambda: load_model("blip_caption", "base_coco", checkpoint=str(ckpt), device=device, **over)},
            args.repeats, args.warmup, device,
        )
        a = t["lavislite"]["output"].state_dict()
        b = BlipForConditionalGeneration.from_pretrained(tmp / "hf").text_decoder.state_dict()
        same = all(torch.equal(a["text_decoder." + k], v) for k, v in b.items() if "text_decoder." + k in a)
        result["runs"]["load"] = {
            "peer": "transformers BlipForConditionalGeneration.from_pretrained (safetensors dir)",
            "peer_time": C.side(t["peer"]), "lavislite_time": C.side(t["lavislite"]),
            "ratio": round(t["peer"]["median_s"] / t["lavislite"]["median_s"], 2),
            "identical_weights": bool(same), "checkpoint_mb": round(ckpt.stat().st_size / 2**20, 1),
            "state_dict_numel": n_params, "memory_how": C.memory_how(device),
        }
        print("load", result["runs"]["load"], flush=True)
    n = 1 if args.quick else args.import_repeats
    ours_t, pulled = import_times(IMPORT_OURS, n)
    peer_t, _ = import_times(IMPORT_PEER, n)
    result["runs"]["import"] = {
        "peer": "from transformers import BlipForConditionalGeneration",
        "peer_time": {"median_s": round(statistics.median(peer_t), 4), "times_s": [round(x, 4) for x in peer_t]},
        "lavislite_time": {"median_s": round(statistics.median(ours_t), 4), "times_s": [round(x, 4) for x in ours_t]},
        "ratio": round(statistics.median(peer_t) / statistics.median(ours_t), 2),
        "lavislite_import_pulls_in_transformers": pulled,
        "note": "fresh interpreter per sample; lavislite: import lavislite + from lavislite.api import load_model",
    }
    print("import", result["runs"]["import"], flush=True)
    C.write("load", result, args.out)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
