"""The offline demo: shapes world -> pre-training -> fine-tuning -> evaluation -> zero-shot video.

``run_demo(out_dir)`` drives the real machinery only: each stage is a project yaml under
``projects/demo/`` run by :func:`lavislite.train.run` with ``--options`` that point the real dataset
builders at the generated world's files, the models at the demo's WordPiece vocabulary and the
fine-tunes at the pre-trained checkpoint. It then prints one table of test metrics next to chance
and draws the loss curves and a gallery (:mod:`lavislite.demo.gallery`).

Run directory (``out_dir``)::

    tokenizer/vocab.txt          WordPiece vocabulary trained on the world's texts
    runs/<stage>/<run_id>/       each stage's runner output (config, log, metrics.jsonl, predictions, checkpoints)
                                 and model/, the trained model as a folder: --model <run_id dir> loads it
    demo_metrics.json            the table below as JSON (metrics, chance, floors, seconds per stage)
    demo_log.txt                 the full log of every stage
    loss_curves.png gallery.png retrieval.png
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import sys
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from lavislite.common.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

PROJECT_DIR = Path(__file__).resolve().parents[2] / "projects" / "demo"
VOCAB_SIZE = 200  # WordPiece target; the world has ~70 words, so this keeps every word whole

# The quick run (tests/CI): a smaller world and fewer steps; the model and everything else is the full demo's.
QUICK_WORLD = {"n_train": 240, "n_val": 8, "n_test": 16, "n_videos": 8}


@dataclass(frozen=True)
class Stage:
    """One step of the demo: a project yaml, its data, where its weights come from."""

    name: str
    title: str
    yaml: str
    data: Callable[[Any], list[str]]  # world -> dataset options
    init_from: str | None = None  # stage whose trained weights this one starts from
    epochs_quick: int = 1
    quick_options: tuple[str, ...] = ()
    has_images: bool = True  # image stage (False: video stage)
    dataset: str = ""
    log: bool = True


def _ann(ds: str, split: str, path: Path | Sequence[Path]) -> list[str]:
    value = f"[{','.join(str(p) for p in path)}]" if isinstance(path, (list, tuple)) else str(path)
    return [f"datasets.{ds}.build_info.annotations.{split}.path={value}"]


def _karpathy(ds: str, gt: bool = False) -> Callable[[Any], list[str]]:
    def opts(w: Any) -> list[str]:
        out = [f"datasets.{ds}.build_info.images.storage={w.root}"]
        for split in ("train", "val", "test"):
            out += _ann(ds, split, w.files[f"coco_karpathy_{split}"])
        if gt:
            for split in ("val", "test"):
                out += _ann(ds, f"{split}_gt", w.files[f"coco_karpathy_{split}_gt"])
        return out

    return opts


def _pretrain_data(w: Any) -> list[str]:
    return [*_ann("pretrain_json", "train", w.files["pretrain"]), f"datasets.pretrain_json.build_info.images.storage={w.root}"]


def _vqa_data(w: Any) -> list[str]:
    return [
        *_ann("coco_vqa", "train", [w.files["vqa_train"], w.files["vqa_val"]]),
        *_ann("coco_vqa", "test", w.files["vqa_test"]),
        f"datasets.coco_vqa.build_info.answer_list.path={w.files['answer_list']}",
        f"datasets.coco_vqa.build_info.images.storage={w.root}",
    ]


def _nlvr_data(w: Any) -> list[str]:
    return [
        *_ann("nlvr", "train", w.files["nlvr_train"]), *_ann("nlvr", "val", w.files["nlvr_dev"]),
        *_ann("nlvr", "test", w.files["nlvr_test"]), f"datasets.nlvr.build_info.images.storage={w.root}",
    ]


def _video_retrieval_data(w: Any) -> list[str]:
    return [*_ann("msrvtt_retrieval", "test", w.files["msrvtt_test"]), f"datasets.msrvtt_retrieval.build_info.videos.storage={w.video_dir}"]


def _video_qa_data(w: Any) -> list[str]:
    return [
        *_ann("msvd_qa", "test", w.files["videoqa_test"]),
        f"datasets.msvd_qa.build_info.answer_list.path={w.files['videoqa_answer_list']}",
        f"datasets.msvd_qa.build_info.videos.storage={w.video_dir}",
    ]


STAGES: tuple[Stage, ...] = (
    Stage("pretrain", "pre-training (ITC+ITM+LM)", "pretrain.yaml", _pretrain_data, epochs_quick=16, dataset="pretrain_json",
          quick_options=("run.warmup_steps=5",)),
    Stage("caption", "captioning fine-tune", "caption.yaml", _karpathy("coco_caption", gt=True), "pretrain", epochs_quick=2,
          dataset="coco_caption", quick_options=("run.warmup_steps=2", "run.num_beams=2")),
    Stage("retrieval", "retrieval fine-tune", "retrieval.yaml", _karpathy("coco_retrieval"), "pretrain", epochs_quick=2,
          dataset="coco_retrieval", quick_options=("run.warmup_steps=2",)),
    Stage("vqa", "VQA fine-tune", "vqa.yaml", _vqa_data, "pretrain", epochs_quick=4, dataset="coco_vqa",
          quick_options=("run.warmup_steps=2", "run.init_lr=2.0e-3")),
    Stage("nlvr", "NLVR fine-tune", "nlvr.yaml", _nlvr_data, "pretrain", epochs_quick=2, dataset="nlvr",
          quick_options=("run.warmup_steps=2",)),
    Stage("video_retrieval", "zero-shot video retrieval", "video_retrieval.yaml", _video_retrieval_data, "retrieval",
          has_images=False, dataset="msrvtt_retrieval", log=False),
    Stage("video_qa", "zero-shot video QA", "video_qa.yaml", _video_qa_data, "vqa", has_images=False, dataset="msvd_qa", log=False),
)


# -- the table -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Row:
    """One line of the results table: a stage's metric, its scale, the chance key and the floor."""

    task: str
    stage: str
    metric: str
    label: str
    scale: float  # the task's value times this is a fraction (percent metrics: 0.01; CIDEr/BLEU: 1)
    chance: str  # key of world.chance, or a computed baseline
    floor: float | None  # fraction the full demo must reach (None: reported only)


ROWS: tuple[Row, ...] = (
    Row("retrieval", "retrieval", "img_r1", "text->image R@1", 0.01, "retrieval_t2i_r1", 0.50),
    Row("retrieval", "retrieval", "txt_r1", "image->text R@1", 0.01, "retrieval_i2t_r1", None),
    Row("captioning", "caption", "CIDEr", "CIDEr", 1.0, "caption_cider", 1.0),
    Row("captioning", "caption", "Bleu_4", "BLEU-4", 1.0, "caption_bleu4", None),
    Row("VQA", "vqa", "overall", "accuracy", 0.01, "vqa_acc", 0.70),
    Row("NLVR", "nlvr", "acc", "accuracy", 0.01, "nlvr_acc", 0.70),
    Row("video (zero-shot)", "video_retrieval", "vid_r1", "text->video R@1", 0.01, "video_t2v_r1", 0.30),
    Row("video QA (zero-shot)", "video_qa", "accuracy", "accuracy", 0.01, "videoqa_acc", None),
)


@dataclass
class DemoResult:
    """What ``run_demo`` returns (and writes as ``demo_metrics.json``)."""

    out_dir: Path
    quick: bool
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> test metrics
    table: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    run_dirs: dict[str, str] = field(default_factory=dict)
    train: dict[str, dict[str, float]] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    world: dict[str, Any] = field(default_factory=dict)
    commands: list[str] = field(default_factory=list)  # ready-to-paste commands using the trained models

    def to_json(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir), "quick": self.quick, "table": self.table, "metrics": self.metrics,
            "seconds": self.seconds, "run_dirs": self.run_dirs, "train": self.train, "files": self.files, "world": self.world,
        }


# -- orchestration ---------------------------------------------------------------------------------
def default_out_dir() -> Path:
    return Path("output") / "demo" / time.strftime("%Y%m%dT%H%M%S", time.gmtime())


def run_demo(
    out_dir: str | Path | None = None,
    *,
    quick: bool = False,
    seed: int = 0,
    threads: int | None = None,
    world_dir: str | Path | None = None,
    stages: Sequence[str] | None = None,
    extra_options: Sequence[str] = (),
    plots: bool = True,
    echo: Callable[[str], None] | None = None,
) -> DemoResult:
    """Run the whole demo and return its metrics; see the module docstring for what is written.

    ``quick``: a small world and a short schedule, same model (the CI test; about 3 CPU minutes, docs/demo.md).
    ``threads``: torch intra-op threads (default: 1 when ``quick``, else the usable cores, at most 8).
    ``world_dir``: where the shapes world goes (default: the lavislite cache, reused across runs).
    ``stages``: run only these stages (names from ``STAGES``; the ones they start from must be included).
    ``extra_options``: ``key=value`` overrides given to every stage (e.g. ``run.device=cpu``).
    """
    say = echo if echo is not None else _print
    out = Path(out_dir) if out_dir is not None else default_out_dir()
    out.mkdir(parents=True, exist_ok=True)
    selected = _select(stages)
    if not threads:  # quick: one thread, as the CI test runs it (the 32 px model gains little from more, and a busy machine much less)
        threads = 1 if quick else min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
    result = DemoResult(out_dir=out.resolve(), quick=quick)
    total = len(selected) + 2
    t_start = time.perf_counter()
    # The first line before torch is imported: on a busy machine that import alone takes several seconds.
    say(f"lavislite demo{' --quick' if quick else ''}: run directory {result.out_dir} ({threads} thread(s))")

    import torch

    from lavislite.demo.world import all_texts, generate_world
    from lavislite.models.tokenizer import build_wordpiece_vocab, init_tokenizer
    from lavislite.train import run as run_project

    torch.set_num_threads(int(threads))
    with _quiet_console(out / "demo_log.txt"), _progress_to(say):
        say(f"      preparing the {'quick' if quick else 'full'} shapes world ...")
        t0 = time.perf_counter()
        world = generate_world(world_dir, seed=seed, **(QUICK_WORLD if quick else {}))
        result.seconds["world"] = time.perf_counter() - t0
        result.world = {"root": str(world.root), "counts": world.counts, "chance": world.chance,
                        "test_heldout_fraction": world.test_heldout_fraction, "reused": world.reused}
        c = world.counts
        say(f"[1/{total}] shapes world {'reused' if world.reused else 'generated'}: {c['images_train']} train / {c['images_test']} test "
            f"images, {c['videos']} videos ({result.seconds['world']:.0f} s) {world.root}")

        t0 = time.perf_counter()
        vocab_dir = out / "tokenizer"
        build_wordpiece_vocab(all_texts(world), VOCAB_SIZE, vocab_dir)
        vocab_size = len(init_tokenizer(vocab_dir))
        result.seconds["tokenizer"] = time.perf_counter() - t0
        say(f"[2/{total}] WordPiece vocabulary: {vocab_size} tokens ({vocab_dir / 'vocab.txt'})")

        common = [
            f"model.tokenizer={vocab_dir.resolve()}", f"model.med_overrides.vocab_size={vocab_size}",
            f"run.output_dir={(out / 'runs').resolve()}", f"run.seed={seed}", "run.num_workers=0",
        ]
        if quick:
            common += ["run.log_freq=2"]
        checkpoints: dict[str, Path] = {}
        for k, stage in enumerate(selected, start=3):
            options = [*common, *stage.data(world), f"run.run_name={stage.name}"]
            if quick:
                options += [*([f"run.max_epoch={stage.epochs_quick}"] if stage.log else []), *stage.quick_options]
            if stage.init_from is not None:
                if stage.init_from not in checkpoints:
                    raise ConfigError(f"demo stage {stage.name!r} starts from stage {stage.init_from!r}; include it in stages")
                options.append(f"model.checkpoint={checkpoints[stage.init_from]}")
            options += list(extra_options)
            say(f"[{k}/{total}] {stage.title} ({stage.yaml}) ...")
            t0 = time.perf_counter()
            summary = run_project(str(PROJECT_DIR / stage.yaml), options)
            secs = time.perf_counter() - t0
            run_dir = Path(summary["run_dir"])
            result.seconds[stage.name] = secs
            result.run_dirs[stage.name] = str(run_dir)
            result.metrics[stage.name] = dict(summary["metrics"].get("test", {}))
            if summary.get("train"):
                result.train[stage.name] = {k2: float(v) for k2, v in summary["train"].items() if _is_number(v)}
            if stage.log:
                checkpoints[stage.name] = _stage_weights(run_dir)
            say(f"      done in {secs:.0f} s: {_headline(stage.name, result.metrics[stage.name])}")

        result.seconds["total"] = time.perf_counter() - t_start
        result.table = build_table(result.metrics, world)
        (out / "demo_metrics.json").write_text(json.dumps(result.to_json(), indent=2, default=str) + "\n", encoding="utf-8")
        if plots:
            from lavislite.demo.gallery import draw_all

            t0 = time.perf_counter()
            result.files = {k: str(v) for k, v in draw_all(result, world).items()}
            result.seconds["plots"] = time.perf_counter() - t0
            result.seconds["total"] = time.perf_counter() - t_start
            (out / "demo_metrics.json").write_text(json.dumps(result.to_json(), indent=2, default=str) + "\n", encoding="utf-8")
    say("")
    say(format_table(result.table))
    test_images = [p for p in world.images if "_test_" in p.name] or list(world.images)
    result.commands = ready_commands(result.run_dirs, test_images[0]) if test_images else []
    if result.commands:
        say("\nthe trained models, ready to use (a run directory loads as --model with no other option):")
        for line in result.commands:
            say(f"  {line}")
    say(f"\ntotal {result.seconds['total'] / 60:.1f} min; metrics {out / 'demo_metrics.json'}"
        + (f"; pictures {', '.join(Path(p).name for p in result.files.values())}" if result.files else ""))
    return result


def _select(names: Sequence[str] | None) -> list[Stage]:
    if names is None:
        return list(STAGES)
    known = {s.name: s for s in STAGES}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"unknown demo stage(s) {unknown}; choose from {list(known)}")
    return [s for s in STAGES if s.name in set(names)]


def _stage_weights(run_dir: Path) -> Path:
    """The model folder the stage's run wrote (``<run>/model/``): the next stage's ``model.checkpoint``.

    The demo validates nothing (every split it reports is a held-out test split), so the folder holds the
    last weights. The run's ``checkpoint_latest.pth`` (optimizer state included) is not needed by the demo
    and triples the disk use: it is deleted.
    """
    from lavislite.models.folder import RUN_SUBDIR, WEIGHTS_FILE

    model_dir = run_dir / RUN_SUBDIR
    if not (model_dir / WEIGHTS_FILE).is_file():
        raise DataError(f"{run_dir}: the stage wrote no {RUN_SUBDIR}/{WEIGHTS_FILE}; see {run_dir / 'log.txt'}")
    (run_dir / "checkpoint_latest.pth").unlink(missing_ok=True)
    return model_dir


def ready_commands(run_dirs: dict[str, str], image: Path | str) -> list[str]:
    """Commands that use the trained models as they are, ready to paste (each run directory is a model folder)."""
    def q(path: Any) -> str:
        return shlex.quote(str(path))

    out = []
    if "caption" in run_dirs:
        out.append(f"lavislite caption {q(image)} --model {q(run_dirs['caption'])}")
    if "vqa" in run_dirs:
        out.append(f"lavislite vqa {q(image)} \"what shape is on the left?\" --model {q(run_dirs['vqa'])}")
    if "retrieval" in run_dirs:
        run = q(run_dirs["retrieval"])
        folder = q(Path(image).parent)
        out += [f"lavislite retrieve --images {folder} --query \"a red circle on the left\" --model {run}",
                f"lavislite match {q(image)} \"a red circle on the left\" --model {run}",
                f"lavislite features {q(image)} --model {run}"]
    if "caption" in run_dirs:
        out.append(f"python -c \"import lavislite; print(lavislite.load_model_and_preprocess({str(run_dirs['caption'])!r}))\"")
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _headline(stage: str, metrics: dict[str, Any]) -> str:
    rows = [r for r in ROWS if r.stage == stage and r.metric in metrics]
    if not rows:
        return "trained" if not metrics else ", ".join(f"{k} {v:.3g}" for k, v in list(metrics.items())[:3] if _is_number(v))
    return ", ".join(f"{r.label} {_fraction(r, metrics[r.metric]):.1%}" if r.scale != 1.0 else f"{r.label} {metrics[r.metric]:.3f}" for r in rows)


def _fraction(row: Row, value: float) -> float:
    return value * row.scale


# -- chance levels and the table -------------------------------------------------------------------
def caption_baseline(world: Any) -> dict[str, float]:
    """CIDEr and BLEU-4 of the most common train caption given to every test image (the captioning
    "chance"): what a model that ignores the image scores."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    train = json.loads(Path(world.files["coco_karpathy_train"]).read_text(encoding="utf-8"))
    test = json.loads(Path(world.files["coco_karpathy_test"]).read_text(encoding="utf-8"))
    common = Counter(_tok(a["caption"]) for a in train).most_common(1)[0][0]
    gts = {i: [_tok(c) for c in row["caption"]] for i, row in enumerate(test)}
    res = {i: [common] for i in gts}
    cider = float(Cider().compute_score(gts, res)[0])
    bleu4 = float(Bleu(4).compute_score(gts, res, verbose=0)[0][3])
    return {"caption_cider": cider, "caption_bleu4": bleu4}


def _tok(text: str) -> str:
    # The PTB tokenizer's effect on these all-lowercase captions: words kept, punctuation dropped.
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def build_table(metrics: dict[str, dict[str, Any]], world: Any) -> list[dict[str, Any]]:
    """One row per reported metric: value, chance and floor as fractions (CIDEr/BLEU as they are)."""
    chance = dict(world.chance)
    if "caption" in metrics:
        chance.update(caption_baseline(world))
    rows = []
    for r in ROWS:
        m = metrics.get(r.stage, {})
        if r.metric not in m or not _is_number(m[r.metric]):
            continue
        value = _fraction(r, float(m[r.metric]))
        c = chance.get(r.chance)
        rows.append({
            "task": r.task, "metric": r.label, "key": f"{r.stage}.{r.metric}", "value": value, "chance": c,
            "floor": r.floor, "percent": r.scale != 1.0, "passed": None if r.floor is None else value >= r.floor,
            "x_chance": (value / c) if c else None,
        })
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """The results table as text (percent metrics as %, CIDEr/BLEU as numbers)."""
    def fmt(v: Any, percent: bool) -> str:
        if v is None:
            return "-"
        return f"{100 * v:.1f}%" if percent else f"{v:.3f}"

    head = ("task", "metric (test split)", "result", "chance", "floor", "")
    lines = [head]
    for r in rows:
        ok = "" if r["passed"] is None else ("ok" if r["passed"] else "BELOW FLOOR")
        lines.append((r["task"], r["metric"], fmt(r["value"], r["percent"]), fmt(r["chance"], r["percent"]),
                      fmt(r["floor"], r["percent"]), ok))
    widths = [max(len(str(row[i])) for row in lines) for i in range(len(head))]
    text = ["  ".join(str(c).ljust(w) if i < 2 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip() for row in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)


# -- console ---------------------------------------------------------------------------------------
PROGRESS_EVERY_S = 10.0  # the demo's progress lines when stderr is not a terminal (a terminal gets tqdm bars)


def _print(msg: str) -> None:
    print(msg, flush=True)


class _Echo(logging.Handler):
    """Hands progress lines (``lavislite.progress``) to the demo's own output, under the stage line."""

    def __init__(self, say: Callable[[str], None]) -> None:
        super().__init__(logging.INFO)
        self.say = say

    def emit(self, record: logging.LogRecord) -> None:
        self.say(f"      {record.getMessage()}")


@contextmanager
def _progress_to(say: Callable[[str], None]) -> Iterator[None]:
    """Progress lines every ``PROGRESS_EVERY_S`` seconds through ``say`` (unless ``--quiet``)."""
    from lavislite.common.logging import PROGRESS_LOGGER, configure_progress

    log = logging.getLogger(PROGRESS_LOGGER)
    handler = _Echo(say)
    _, old_every = configure_progress(every_s=PROGRESS_EVERY_S)
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)
        configure_progress(every_s=old_every)


class _ExpectedWarnings(logging.Filter):
    """Keeps expected warnings off the console (they stay in the logs): a pre-trained checkpoint loaded
    into a head has keys the head does not use (and lacks the head's new layers), and a small split
    clamps the re-ranking depth."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name == "lavislite.common.checkpoint" and record.levelno == logging.WARNING:
            return False
        msg = record.getMessage()
        return not ("re-ranking all" in msg or "ranking all" in msg)


@contextmanager
def _quiet_console(log_file: Path) -> Iterator[None]:
    """Stage INFO logs go to ``log_file`` (and each run's log.txt); the console keeps warnings, the
    demo's own one-line-per-stage progress and the runner's progress bars."""
    lav = logging.getLogger("lavislite")
    handlers = logging.getLogger().handlers + lav.handlers
    roots = [h for h in handlers if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]
    added: list[logging.Handler] = []
    quiet = _ExpectedWarnings()
    if not roots:  # keep setup_run_logging from adding an INFO console handler
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        lav.addHandler(h)
        added.append(h)
        roots = [h]
    old_levels = [h.level for h in roots]
    for h in roots:
        h.setLevel(logging.WARNING)
        h.addFilter(quiet)
    fh = logging.FileHandler(log_file, encoding="utf-8")
    fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    fh.setLevel(logging.INFO)
    lav.addHandler(fh)
    old_lav = lav.level
    lav.setLevel(logging.INFO)
    try:
        yield
    finally:
        lav.setLevel(old_lav)
        lav.removeHandler(fh)
        fh.close()
        for h, lvl in zip(roots, old_levels):
            h.setLevel(lvl)
            h.removeFilter(quiet)
        for h in added:
            lav.removeHandler(h)
