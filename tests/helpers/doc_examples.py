"""Runs every ```python and ```bash example of README.md and docs/*.md against the tiny model types.

Run as a script (``python tests/helpers/doc_examples.py OUT.json``), it executes the examples of each page in
document order in one fresh folder per page (the "sandbox") and writes one status per example to OUT.json;
``test_doc_examples.py`` turns each status into a test. How an example is made to run offline and fast:

* **Model types.** Every model type named in an example becomes ``tiny`` (random weights, 32 px images,
  a two-layer ViT and text transformer): ``load_model*("name", "type")`` in Python, ``--model name:type``
  (and the command's default model) on the command line. The tiny types' tokenizer, ``bert-base-uncased``,
  is a small WordPiece vocabulary in the sandbox's ``bert-base-uncased/`` folder.
* **Sizes.** ``SUBSTITUTIONS`` shrinks the sizes an example names (``image_size=480`` -> 32, 16 frames -> 4).
* **Files.** The sandbox holds what the examples open: every ``*.jpg``/``*.png``/``*.mp4`` they name (tiny
  images and clips), ``photos/`` (3 images), ``clips/`` (2 clips), ``answers.json``, ``captions.txt``, a
  tiny COCO Karpathy split under ``coco/``.
* **Context.** A fragment that uses names it does not define gets them from ``PRELUDES`` (keyed by a
  line of the fragment).
* **Placeholders.** A line with a ``<placeholder>`` (``<run id>``, ``<out>``) is a synopsis and is not run.
* **Weights.** ``checkpoint=`` / ``--checkpoint`` are dropped when the model becomes tiny (its random weights
  stand in for the file named).
* **Not run.** ``NOT_RUN`` lists, with the reason, the lines that need real data, official weights, several
  processes or GPUs, or that are synopses with placeholders. Each entry must still match a line (a stale
  entry fails the test), and a Python line listed there is replaced by ``pass``.

Commands run in this process: ``lavislite ...`` and ``python -m lavislite ...`` through
``lavislite.cli.main``, ``python -m lavislite.train ...`` through ``lavislite.train.main``; they must exit 0.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

# (page, text in the line) -> why it is not run here
NOT_RUN: dict[tuple[str, str], str] = {
    ("README.md", "pip install"): "installs the package and runs the full demo (~10 min); tests/demo runs the same pipeline quick",
    ("README.md", "python -m pytest -q"): "the test suite itself",
    ("README.md", "lavislite train --cfg-path projects/blip/train/caption_coco_ft.yaml"): "COCO images and the official pre-trained weights",
    ("README.md", "lavislite evaluate --cfg-path projects/blip/eval/caption_coco_eval.yaml"): "COCO images and the official weights",
    ("docs/datasets.md", "lavislite train --cfg-path projects/blip/train/caption_coco_ft.yaml"): "COCO images under /data",
    ("docs/demo.md", "lavislite demo "): "the full demo (~10 min); tests/demo/test_demo_run.py runs run_demo(quick=True)",
    ("docs/demo.md", "lavislite demo --quick"): "tests/demo/test_demo_run.py runs the same run_demo(quick=True)",
    ("docs/demo.md", "lavislite demo --out DIR"): "a synopsis with placeholders",
    ("docs/formats.md", "world = generate_world()"): "writes the full world (minutes); the quick world on the next line is the same call",
    ("docs/inference.md", "torchrun"): "several processes; tests/inference/test_inference_dist.py runs these sharded commands",
    (
        "docs/own_data.md",
        "--cfg-path my_caption.yaml",
    ): "trains on one's own photos; the page's yaml files are checked by tests/datasets/test_dataset_own_data_doc.py",
    ("docs/registry_and_config.md", 'tokenizer="/models/bert-base-uncased"'): "the official checkpoint and BERT vocabulary under /models",
    ("docs/runners.md", "my_project.yaml"): "a synopsis with placeholders",
    ("docs/runners.md", "--cfg-path my_project.yaml --resume"): "a placeholder project and run id",
    ("docs/runners.md", "toy.yaml"): "the toy project of this page is run by tests/runners (tests/runners/runner_toys.py holds the same plugins)",
    ("docs/video.md", "projects/blip/run_scripts/eval/"): "MSR-VTT videos and 8 GPUs",
    (
        "docs/capfilt.md",
        "lavislite capfilt --cfg-path projects/capfilt/bootstrap.yaml",
    ): "web shards under /data and fine-tuned captioner/filter weights; tests/capfilt runs the pipeline on generated shards",
    ("docs/capfilt.md", "torchrun"): "8 GPUs",
    (
        "docs/serve.md",
        "",
    ): "index/search/serve examples that landed after the collector's last pass (tests/serve runs these commands); to be made runnable here",
    ("README.md", "lavislite index photos/ --out photos.index"): "as docs/serve.md above",
    ("README.md", "lavislite serve --index photos.index"): "starts a server that runs until stopped",
    ("docs/models.md", "print(model.load_report)"): "follows a load of /models/...pth (official weights)",
    (
        "docs/models.md",
        'model = load_model("blip_caption", "',
    ): "the official checkpoint under /models (a fragment: load_model imported above it on the page)",
    (
        "docs/blip2.md",
        "",
    ): "BLIP-2 fragments (an `image` from the model's processor, EVA ViT-g/OPT/T5 weights); "
    "the heads' tests run them on tiny types; to be made runnable",
    ("docs/capfilt.md", "lavislite demo capfilt"): "the CapFilt ablation demo (minutes); tests/capfilt runs its smoke test",
    ("docs/capfilt.md", 'run(load_config("projects/capfilt/bootstrap.yaml"'): "web shards and fine-tuned weights, as above",
    ("docs/capfilt.md", 'print(result.summary["kept_web_rate"]'): "the result of the line above",
    (
        "docs/inference.md",
        "output/caption/20250101T120000Z-3fa2c1",
    ): "a run directory of one's own; tests/folders runs these commands on trained tiny runs",
    ("docs/video.md", "--cfg-path projects/blip/eval/msvd_qa_zs.yaml"): "MSVD videos and the official VQA weights",
    (
        "docs/video.md",
        "--cfg-path my_retrieval.yaml",
    ): "one's own videos; tests/video/test_video_retrieval_task.py runs the same task on generated clips",
}

# (regex, replacement) applied to every example: the sizes examples name, shrunk to the tiny models'
SUBSTITUTIONS: list[tuple[str, str]] = [
    (r"image_size=(224|384|480)", "image_size=32"),
    (r"num_frames=(8|16)", "num_frames=4"),
]

# text in a fragment's line -> Python run before it, defining what the fragment uses
PRELUDES: dict[str, str] = {
    'registry.get_builder_class("coco_caption")(cfg.datasets.coco_caption, cache_dir': (
        "from lavislite.common.config import build_run_config\ncfg = build_run_config('coco_caption_project.yaml', [])\ncache_dir = 'cache'\n"
    ),
}


@dataclass
class Example:
    page: str  # relative to the repo
    line: int  # of the opening fence
    lang: str  # python | bash
    code: str

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def collect() -> list[Example]:
    out = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for m in re.finditer(r"^```(python|bash)[ \t]*\n(.*?)^```", text, flags=re.S | re.M):
            out.append(Example(str(page.relative_to(REPO)), text[: m.start()].count("\n") + 1, m.group(1), m.group(2)))
    return out


def not_run_reason(page: str, line: str) -> str | None:
    if re.search(r"<[a-z][\w ]*>", re.sub(r"(^|\s)#.*$", "", line)):  # outside comments
        return "a synopsis with <placeholders>"
    for (p, needle), reason in NOT_RUN.items():
        if p == page and needle in line:
            return reason
    return None


# -- the sandbox ----------------------------------------------------------------------------------------
def make_sandbox(root: Path, text: str) -> None:
    """The files the examples of a page open (see the module docstring)."""
    if str(REPO) not in sys.path:  # run as a script: make the repository's tests package importable
        sys.path.insert(0, str(REPO))
    from tests.helpers.tasks import draw, tokenizer_dir, write_karpathy
    from tests.helpers.video import write_video

    root.mkdir(parents=True, exist_ok=True)
    (root / "projects").symlink_to(REPO / "projects")  # examples name project yamls relative to the repo
    tokenizer_dir(root / "bert-base-uncased")
    images = [f"photos/{c}.jpg" for c in ("red", "green", "blue")] + re.findall(r"[\w./-]+\.(?:jpg|png)\b", text)
    for k, name in enumerate(dict.fromkeys(images)):
        path = root / name
        if not name.startswith("/") and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            draw(("red", "green", "blue", "yellow")[k % 4], ("square", "circle", "cross")[k % 3], seed=k).save(path)
    videos = ["clips/a.mp4", "clips/b.mp4"] + re.findall(r"[\w./-]+\.mp4\b", text)
    for k, name in enumerate(dict.fromkeys(videos)):
        if not name.startswith("/") and not (root / name).exists():
            write_video(root / name, n_frames=6, size=32, color=((0, 0, 255), (0, 255, 0))[k % 2])
    (root / "answers.json").write_text(json.dumps(["yes", "no", "red", "blue", "two"]))
    (root / "captions.txt").write_text("a red square\na blue circle\n")
    paths = write_karpathy(root / "coco")
    ann = {s: {"url": None, "path": str(paths[s])} for s in ("train", "val", "test")}
    eval_32 = {"name": "blip_image_eval", "image_size": 32}
    project = {
        "datasets": {
            "coco_caption": {
                "build_info": {"annotations": ann, "images": {"storage": str(root / "coco")}},
                "vis_processor": {"train": {"name": "blip_image_train", "image_size": 32}, "eval": eval_32},
            }
        },
        "run": {"task": "captioning"},
    }
    (root / "coco_caption_project.yaml").write_text(json.dumps(project))


# -- running --------------------------------------------------------------------------------------------
def tiny_python(code: str) -> str:
    code = re.sub(r'(load_model(?:_and_preprocess)?\(\s*"\w+",\s*)"\w+"', r'\1"tiny", tokenizer="bert-base-uncased"', code)
    code = re.sub(r'(load_model(?:_and_preprocess)?\(\s*"\w+", "tiny", [^)]*?),\s*checkpoint="[^"]*"', r"\1", code)
    for pattern, repl in SUBSTITUTIONS:
        code = re.sub(pattern, repl, code)
    return code


def _command_defaults() -> dict[str, str]:
    """Command -> its default ``--model`` (commands that load a model)."""
    import argparse

    from lavislite.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {name: p.get_default("model") for name, p in sub.choices.items() if p.get_default("model")}


def tiny_argv(argv: list[str]) -> list[str]:
    out, i, tiny = [], 0, False
    while i < len(argv):
        if argv[i] == "--model" and i + 1 < len(argv) and ":" in argv[i + 1]:  # name:type (not a model folder)
            out += ["--model", argv[i + 1].split(":")[0] + ":tiny"]
            tiny, i = True, i + 2
        elif argv[i] == "--checkpoint" and i + 1 < len(argv):
            i += 2
        else:
            out.append(argv[i])
            i += 1
    default = _command_defaults().get(argv[0]) if argv else None
    if default and "--model" not in out:
        out += ["--model", default.split(":")[0] + ":tiny"]
        tiny = True
    if tiny and "--tokenizer" not in out:
        out += ["--tokenizer", "bert-base-uncased"]
    return out


def without_not_run(page: str, code: str) -> str:
    """``code`` with each top-level statement that holds a NOT_RUN line replaced by ``pass``."""
    import ast

    lines = code.splitlines()
    for node in reversed(ast.parse(code).body):
        first = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))]) - 1
        last = node.end_lineno
        if any(not_run_reason(page, line) for line in lines[first:last]):
            lines[first:last] = ["pass"]
    return "\n".join(lines)


def run_python(ex: Example, sandbox: Path) -> str:
    code = without_not_run(ex.page, tiny_python(ex.code))
    prelude = next((p for needle, p in PRELUDES.items() if needle in ex.code), "")
    scope = {"__name__": "__doc_example__", "__file__": str(sandbox / "example.py")}
    exec(compile(prelude + code, f"{ex.id}", "exec"), scope)
    return "ok"


def run_bash(ex: Example) -> str:
    from lavislite import cli, train

    ran = 0
    for raw in ex.code.replace("\\\n", " ").splitlines():
        argv = shlex.split(raw, comments=True)
        if not argv:
            continue
        if not_run_reason(ex.page, raw):
            continue
        if argv[:3] == ["python", "-m", "lavislite"]:
            argv = ["lavislite", *argv[3:]]
        if argv[:3] == ["python", "-m", "lavislite.train"]:
            rc = train.main(argv[3:])
        elif argv[0] == "lavislite":
            rc = cli.main(tiny_argv(argv[1:]))
        else:
            raise RuntimeError(f"cannot run {raw.strip()!r}: add it to NOT_RUN with the reason")
        if rc != 0:
            raise RuntimeError(f"{raw.strip()!r} exited {rc}")
        ran += 1
    return "ok" if ran else "not run"


def main(out_json: str) -> int:
    import logging
    import os
    import tempfile

    import torch

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)
    results: dict[str, str] = {}
    start_dir = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="doc_examples_") as tmp:
        for page in PAGES:
            examples = [e for e in collect() if e.page == str(page.relative_to(REPO))]
            if not examples:
                continue
            sandbox = Path(tmp) / page.stem
            make_sandbox(sandbox, "\n".join(e.code for e in examples))
            os.chdir(sandbox)
            try:
                for ex in examples:
                    try:
                        results[ex.id] = run_python(ex, sandbox) if ex.lang == "python" else run_bash(ex)
                    except BaseException as exc:  # noqa: BLE001 (a doc example may raise anything, SystemExit included)
                        results[ex.id] = "failed: " + "".join(traceback.format_exception(exc)[-6:])
            finally:
                os.chdir(start_dir)
    Path(out_json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
