"""``lavislite models``: list the model zoo."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list every registered model name and type")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    p.add_argument("--markdown", action="store_true", help="print a markdown table (ViT, image size, default weights)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lavislite.api import model_zoo

    if args.markdown:
        print(model_zoo.markdown())
    elif args.json:
        for e in model_zoo:
            print(json.dumps({"name": e.name, "model_type": e.model_type, "config": e.config}))
    else:
        print(model_zoo)
    return 0
