"""``lavislite match IMAGE... "text"``: image-text matching scores (ITM probability and ITC cosine)."""

from __future__ import annotations

import argparse

from lavislite.inference.options import add_model_options, add_run_options

DEFAULT_MODEL = "blip_image_text_matching:base"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("match", help="score how well texts match images (ITM probability, ITC cosine)",
                       description="Score image-text pairs. The last positional argument is the text unless --text is "
                                   "given. itm = softmax of the ITM head (match probability), itc = cosine of the "
                                   "normalised ITC features.")
    p.add_argument("inputs", nargs="+", metavar="IMAGE", help='image files, folders or .tar shards, then "text"')
    p.add_argument("--text", "-t", action="append", default=[], help="a text, repeatable (each image is scored against every text)")
    p.add_argument("--head", choices=("both", "itm", "itc"), default="both", help="which scores to compute (default both)")
    add_model_options(p, DEFAULT_MODEL)
    add_run_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lavislite.common.errors import ConfigError
    from lavislite.inference.pipeline import run_image_command

    if not args.text:
        if len(args.inputs) < 2:
            raise ConfigError('give images and then the text: lavislite match IMAGE "a dog on a beach" (or --text)')
        args.text = [args.inputs[-1]]
        args.inputs = args.inputs[:-1]
    cols = ("id", "text") + (("itm",) if args.head != "itc" else ()) + (("itc",) if args.head != "itm" else ())
    return run_image_command(args, "match", lambda ld: _match_fn(args, ld), columns=cols, check=_check)


def _check(ld) -> None:
    from lavislite.common.errors import ConfigError

    if not hasattr(ld.model, "match_probability"):
        raise ConfigError(
            f"--model {ld.label} has no ITM/ITC match heads; use blip_image_text_matching:base or :large"
        )


def _match_fn(args: argparse.Namespace, ld):
    import torch

    process = ld.txt_processors["eval"]
    texts = [process(t) for t in args.text]
    nt = len(texts)

    def fn(batch: dict) -> list[dict]:
        image = ld.to_model(batch["image"])
        b = image.shape[0]
        scores: dict[str, list[list[float]]] = {}
        with torch.inference_mode():
            if args.head != "itc":  # each image's texts grouped contiguously: the ITM grouped cross-attention
                logits = ld.model({"image": image, "text_input": [t for _ in range(b) for t in texts]}, match_head="itm")
                scores["itm"] = logits.float().softmax(-1)[:, 1].view(b, nt).tolist()
            if args.head != "itm":
                scores["itc"] = ld.model({"image": image, "text_input": texts}, match_head="itc").float().tolist()
        out = []
        for i, item_id in enumerate(batch["id"]):
            rec = {"id": item_id, "text": args.text[0] if nt == 1 else list(args.text)}
            for k, v in scores.items():
                rec[k] = v[i][0] if nt == 1 else v[i]
            out.append(rec)
        return out

    return fn
