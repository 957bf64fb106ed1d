"""``lavislite serve``: the JSON HTTP API and web page (captioning, VQA, matching, classification, search)."""

from __future__ import annotations

import argparse

ROLES = {"caption": "captioner", "vqa": "VQA model", "retrieval": "retrieval/ITM model (match, classify)"}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the models over HTTP with a web page",
                       description="Serve an HTTP JSON API and a web page. Without any model flag it serves the models "
                                   "the newest `lavislite demo` run trained (output/demo). Binds 127.0.0.1 unless --host "
                                   "says otherwise. See docs/serve.md.")
    g = p.add_argument_group("models (NAME:TYPE with an optional checkpoint, or a model folder)")
    for role, what in ROLES.items():
        g.add_argument(f"--{role}", default=None, metavar="NAME:TYPE|FOLDER", help=f"the {what}: a registered type or a model folder")
        g.add_argument(f"--{role}-checkpoint", default=None, metavar="PATH", help=f"weights of the {what}")
    g.add_argument("--index", default=None, metavar="INDEX", help="an index made by lavislite index, for search")
    g.add_argument("--demo", default=None, metavar="DIR", help="a lavislite demo output folder to serve (default: the newest under output/demo)")
    g.add_argument("--tokenizer", default=None, metavar="DIR", help="tokenizer directory for the models given here")
    g.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="model config override for the models given here")
    g.add_argument("--device", default=None, help="cpu, cuda ... (default: the GPU if there is one)")
    g.add_argument("--dtype", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="auto (default): bf16 on a GPU and for CPU models of 50M+ parameters, else fp32")
    s = p.add_argument_group("server")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    s.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    s.add_argument("--token", default=None, help="require 'Authorization: Bearer TOKEN' on every API call "
                                                 "(or set LAVISLITE_SERVE_TOKEN, which keeps it out of the process list)")
    s.add_argument("--image-root", action="append", default=[], metavar="DIR",
                   help="folder requests may name images in by relative path (repeatable; default: none)")
    s.add_argument("--max-upload-mb", type=float, default=10.0, help="largest upload (default 10 MB)")
    s.add_argument("--max-megapixels", type=float, default=20.0, help="largest image (default 20 megapixels)")
    s.add_argument("--max-text-chars", type=int, default=1000, help="longest question/prompt/query/label (default 1000)")
    s.add_argument("--max-batch", type=int, default=8, help="requests batched per model call (default 8; 1 = no batching)")
    s.add_argument("--max-wait-ms", type=float, default=10.0, help="how long a batch waits to fill (default 10 ms)")
    s.add_argument("--beams", type=int, default=3, help="caption beam size (default 3)")
    p.set_defaults(func=run)


def specs_from_args(args: argparse.Namespace) -> dict:
    """Role -> ModelSpec from the flags, or from the demo's trained runs when no model flag is given."""
    from lavislite.common.errors import ConfigError
    from lavislite.serve.heads import demo_specs, newest_demo_dir
    from lavislite.serve.identity import ModelSpec

    specs = {}
    for role in ROLES:
        model, ckpt = getattr(args, role), getattr(args, f"{role}_checkpoint")
        if ckpt and not model:
            raise ConfigError(f"--{role}-checkpoint needs --{role} NAME:TYPE (the architecture the weights are for)")
        if model:
            specs[role] = ModelSpec.from_args(model, ckpt, args.tokenizer, args.option)
    if specs or args.index and not args.demo:
        return specs
    demo = args.demo or newest_demo_dir()
    if demo is None:
        raise ConfigError("no model to serve: give --caption/--vqa/--retrieval NAME:TYPE (with --*-checkpoint), --index INDEX, "
                          "or run `python -m lavislite demo` first (its trained models serve by default)")
    specs = demo_specs(demo)
    if not specs:
        raise ConfigError(f"--demo {demo}: no trained caption/vqa/retrieval runs found under {demo}/runs")
    return specs


def run(args: argparse.Namespace) -> int:
    import os
    import sys
    from pathlib import Path

    from lavislite.common.errors import ConfigError
    from lavislite.serve.app import TOKEN_ENV, ServeConfig, create_app
    from lavislite.serve.heads import load_heads
    from lavislite.serve.images import Limits
    from lavislite.serve.server import serve_forever

    roots = []
    for r in args.image_root:
        if not Path(r).is_dir():
            raise ConfigError(f"--image-root {r}: no such folder")
        roots.append(Path(r).resolve())
    limits = Limits(max_upload_bytes=int(args.max_upload_mb * 2**20), max_pixels=int(args.max_megapixels * 1e6),
                    max_text_chars=args.max_text_chars)
    token = args.token or os.environ.get(TOKEN_ENV) or None
    heads = load_heads(specs_from_args(args), index=args.index, device=args.device, dtype=args.dtype)
    heads.decode["num_beams"] = args.beams
    app = create_app(heads, ServeConfig(token=token, limits=limits, image_roots=tuple(roots), max_batch=args.max_batch,
                                        max_wait_ms=args.max_wait_ms))
    where = "" if args.host in ("127.0.0.1", "localhost", "::1") else " (reachable from other machines)"
    print(f"lavislite serve: http://{args.host}:{args.port}/{where} serving {', '.join(heads.names())}"
          f"{'; API calls need the bearer token' if token else ''}", file=sys.stderr)
    serve_forever(app, args.host, args.port)
    return 0
