"""``lavislite vqa IMAGE... "question"``: answers as JSON lines or a table (resumable, torchrun-able)."""

from __future__ import annotations

import argparse

from lavislite.inference.options import add_model_options, add_run_options

DEFAULT_MODEL = "blip_vqa:vqav2"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("vqa", help="answer a question about images",
                       description="Answer questions about images. The last positional argument is the question unless "
                                   "--question is given (then every positional is an image input).")
    p.add_argument("inputs", nargs="+", metavar="IMAGE", help='image files, folders or .tar shards, then "question"')
    p.add_argument("--question", "-Q", action="append", default=[], help="a question, repeatable (each image gets every question)")
    g = p.add_argument_group("answering")
    g.add_argument("--method", choices=("generate", "rank"), default=None,
                   help="generate (beam search) or rank (pick from --answer-list); default: rank with an answer list, else generate")
    g.add_argument("--answer-list", default=None, metavar="FILE", help="candidate answers: a JSON list or one answer per line")
    g.add_argument("--num-ans-candidates", type=int, default=128, help="rank: candidates re-scored per question (default 128)")
    g.add_argument("--beams", type=int, default=3, help="generate: beam size (default 3)")
    g.add_argument("--max-length", type=int, default=10, help="generate: max answer tokens (default 10)")
    g.add_argument("--min-length", type=int, default=1, help="generate: min answer tokens (default 1)")
    add_model_options(p, DEFAULT_MODEL)
    add_run_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lavislite.common.errors import ConfigError
    from lavislite.inference.pipeline import run_image_command

    if not args.question:
        if len(args.inputs) < 2:
            raise ConfigError('give images and then the question: lavislite vqa IMAGE "what is in the picture?" (or --question)')
        args.question = [args.inputs[-1]]
        args.inputs = args.inputs[:-1]
    answers = _answer_list(args.answer_list) if args.answer_list else None
    method = args.method or ("rank" if answers else "generate")
    if method == "rank" and answers is None:
        raise ConfigError("--method rank needs --answer-list FILE (a JSON list of answers or one answer per line)")
    return run_image_command(args, "vqa", lambda ld: _vqa_fn(args, ld, method, answers), columns=("id", "question", "answer"), check=_check)


def _check(ld) -> None:
    from lavislite.models.protocols import VQAModel, require

    require(ld.model, [VQAModel], by=f"lavislite vqa (--model {ld.label})",
            hint="this model cannot answer questions; use a blip_vqa type, e.g. blip_vqa:vqav2")


def _answer_list(path: str) -> list[str]:
    import json
    from pathlib import Path

    from lavislite.common.errors import DataError

    p = Path(path)
    if not p.is_file():
        raise DataError(f"--answer-list {path}: no such file")
    text = p.read_text(encoding="utf-8")
    if p.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"--answer-list {path}: not valid JSON ({exc}); give a JSON list of strings") from exc
    else:
        data = [line.strip() for line in text.splitlines() if line.strip()]
    if not isinstance(data, list) or not data or not all(isinstance(a, str) for a in data):
        raise DataError(f"--answer-list {path}: expected a non-empty list of answer strings")
    return data


def _vqa_fn(args: argparse.Namespace, ld, method: str, answers):
    process = ld.txt_processors["eval"]
    questions = [process(q) for q in args.question]
    nq = len(questions)

    def fn(batch: dict) -> list[dict]:
        model = ld.model
        import torch

        with torch.inference_mode():
            embeds = model.visual_tokens(ld.to_model(batch["image"]))  # once per image, shared by its questions
        b = embeds.shape[0]
        preds = model.predict_answers(
            {"image_embeds": embeds.repeat_interleave(nq, 0), "text_input": [q for _ in range(b) for q in questions]},
            num_beams=args.beams, inference_method=method, max_len=args.max_length, min_len=args.min_length,
            num_ans_candidates=args.num_ans_candidates, answer_list=answers,
        )
        out = []
        for i, item_id in enumerate(batch["id"]):
            mine = preds[i * nq : (i + 1) * nq]
            if nq == 1:
                out.append({"id": item_id, "question": args.question[0], "answer": mine[0]})
            else:
                out.append({"id": item_id, "question": list(args.question), "answer": mine})
        return out

    return fn
