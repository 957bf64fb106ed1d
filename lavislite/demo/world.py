"""The synthetic "shapes" world: images, videos and annotations in the real data sets' formats.

``generate_world(root)`` draws scenes of coloured shapes (:mod:`lavislite.demo.shapes`) and writes
them with captions, questions and statements in the formats of BLIP's COCO Karpathy, VQA, NLVR2,
MSR-VTT and video-QA files (see ``docs/formats.md``), so the real dataset builders read them.
It is deterministic by seed and idempotent: a ``manifest.json`` records the parameters and a
second call with the same parameters reuses the files.

Fairness: train and val never contain the held-out (colour, shape, position) triples; every
val and test scene is new (no train scene has the same description) and unique within its split,
so each test caption identifies its image and recall is meaningful.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from lavislite.common.errors import ConfigError, DataError
from lavislite.demo.shapes import (
    COLORS,
    DIRECTIONS,
    PLURALS,
    POSITIONS,
    SHAPES,
    SIZES,
    Clip,
    Obj,
    Scene,
    render_clip,
    render_scene,
    sample_clip,
    sample_scene,
    save_image,
    write_video,
)

WORLD_VERSION = 2  # bump when the generator's output changes, so old caches are regenerated
FULL_SIZES = {"n_train": 2000, "n_val": 100, "n_test": 100, "n_videos": 50}
QUICK_SIZES = {"n_train": 40, "n_val": 12, "n_test": 12, "n_videos": 6}
CAPTIONS_PER_IMAGE = {"train": 3, "val": 5, "test": 5}
QUESTIONS_PER_IMAGE = {"train": 4, "val": 3, "test": 3}
# NLVR sentences per image of the split, each with a true and a false pair (as dense as the VQA questions;
# one per image left the 2-layer demo model memorising 4,000 pairs instead of learning the rules)
STATEMENTS_PER_IMAGE = {"train": 4, "val": 2, "test": 2}
QUESTIONS_PER_VIDEO = 3
HELDOUT_FRACTION = 0.08  # of all (colour, shape, position) triples, never seen in train or val
VQA_ANSWERS_PER_QUESTION = 10
MANIFEST = "manifest.json"

POSITION_PHRASES = {"top": "at the top", "left": "on the left", "center": "in the center",
                    "right": "on the right", "bottom": "at the bottom"}
NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}
# Wrappers around the list of object phrases; each test image gets all five, each with every object.
CAPTION_WRAPPERS = ("{}", "there is {}", "an image with {}", "a drawing of {}", "{} on a dark background")
VIDEO_CAPTION_WRAPPERS = ("{}", "a video where {}", "{} on a dark background")

# Answer categories: for annotator-style noise in train/val answers and for documentation.
ANSWER_CATEGORIES: dict[str, tuple[str, ...]] = {
    "color": tuple(COLORS), "shape": SHAPES, "size": tuple(SIZES), "position": tuple(POSITIONS),
    "direction": tuple(DIRECTIONS), "count": ("0", "1", "2", "3"), "yesno": ("yes", "no"),
}


# -- text about still scenes ----------------------------------------------------------------------
def object_phrase(obj: Obj) -> str:
    """``"a large red circle on the left"``: every attribute, so captions identify scenes."""
    return f"a {obj.size} {obj.color} {obj.shape} {POSITION_PHRASES[obj.position]}"


def _join(phrases: Sequence[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def make_captions(scene: Scene, rng: random.Random, k: int) -> list[str]:
    """``k`` (<= 5) distinct captions, each naming every object with all its attributes.

    Variety comes from the wrapper and, a quarter of the time, a shuffled object order; the
    reading order (top, left, center, right, bottom) dominates so a captioner has a mode to learn.
    """
    if not 1 <= k <= len(CAPTION_WRAPPERS):
        raise ConfigError(f"captions per image must be 1..{len(CAPTION_WRAPPERS)}, got {k}")
    captions = []
    for wrapper in rng.sample(CAPTION_WRAPPERS, k):
        objects = list(scene)
        if len(objects) > 1 and rng.random() < 0.25:
            rng.shuffle(objects)
        captions.append(wrapper.format(_join([object_phrase(o) for o in objects])))
    return captions


def _where(obj: Obj) -> str:
    return POSITION_PHRASES[obj.position]


def _unique(scene: Scene, obj: Obj, key: Callable[[Obj], Any]) -> bool:
    return sum(key(o) == key(obj) for o in scene) == 1


QA = tuple[str, str, str]  # question, answer, answer category


def _q_color(scene: Scene, rng: random.Random) -> QA:
    obj = rng.choice(scene)
    forms = [f"what color is the shape {_where(obj)}?"]
    if _unique(scene, obj, lambda o: o.shape):
        forms.append(f"what color is the {obj.shape}?")
    else:
        forms.append(f"what color is the {obj.shape} {_where(obj)}?")
    return rng.choice(forms), obj.color, "color"


def _q_shape(scene: Scene, rng: random.Random) -> QA:
    obj = rng.choice(scene)
    forms = [f"what shape is {_where(obj)}?"]
    if _unique(scene, obj, lambda o: o.color):
        forms.append(f"what shape is the {obj.color} object?")
    return rng.choice(forms), obj.shape, "shape"


def _q_count(scene: Scene, rng: random.Random) -> QA:
    form = rng.choice(("all", "color", "shape"))
    if form == "all":
        return "how many shapes are there?", str(len(scene)), "count"
    present = rng.random() < 0.7
    if form == "color":
        color = rng.choice([o.color for o in scene] if present else list(COLORS))
        return f"how many {color} shapes are there?", str(sum(o.color == color for o in scene)), "count"
    shape = rng.choice([o.shape for o in scene] if present else list(SHAPES))
    return f"how many {PLURALS[shape]} are there?", str(sum(o.shape == shape for o in scene)), "count"


def _q_exist(scene: Scene, rng: random.Random) -> QA:
    want_yes = rng.random() < 0.5
    if rng.random() < 0.25:
        occupied = {o.position for o in scene}
        options = [p for p in POSITIONS if (p in occupied) == want_yes]
        position = rng.choice(options)
        return f"is there a shape {POSITION_PHRASES[position]}?", "yes" if want_yes else "no", "yesno"
    pairs = {(o.color, o.shape) for o in scene}
    if want_yes:
        color, shape = rng.choice(sorted(pairs))
    else:
        absent = [(c, s) for c in COLORS for s in SHAPES if (c, s) not in pairs]
        # Near misses (right colour or right shape) make the question about binding, not a guess.
        near = [(c, s) for c, s in absent if any(c == pc or s == ps for pc, ps in pairs)]
        color, shape = rng.choice(near if near and rng.random() < 0.7 else absent)
    return f"is there a {color} {shape}?", "yes" if want_yes else "no", "yesno"


def _q_position(scene: Scene, rng: random.Random) -> QA | None:
    obj = rng.choice(scene)
    if _unique(scene, obj, lambda o: (o.color, o.shape)):
        return f"where is the {obj.color} {obj.shape}?", obj.position, "position"
    if _unique(scene, obj, lambda o: (o.size, o.color, o.shape)):
        return f"where is the {obj.size} {obj.color} {obj.shape}?", obj.position, "position"
    return None


def _q_size(scene: Scene, rng: random.Random) -> QA:
    obj = rng.choice(scene)
    if _unique(scene, obj, lambda o: (o.color, o.shape)):
        return f"what size is the {obj.color} {obj.shape}?", obj.size, "size"
    return f"what size is the {obj.color} {obj.shape} {_where(obj)}?", obj.size, "size"


QUESTION_TYPES: dict[str, Callable[[Scene, random.Random], QA | None]] = {
    "color": _q_color, "shape": _q_shape, "count": _q_count,
    "exist": _q_exist, "position": _q_position, "size": _q_size,
}


def make_questions(scene: Scene, rng: random.Random, k: int) -> list[QA]:
    """Up to ``k`` questions of distinct types, each answerable from the scene graph."""
    out: list[QA] = []
    for kind in rng.sample(list(QUESTION_TYPES), len(QUESTION_TYPES)):
        qa = QUESTION_TYPES[kind](scene, rng)
        if qa is not None:
            out.append(qa)
        if len(out) == k:
            break
    return out


def _human_answers(answer: str, category: str, rng: random.Random, noisy: bool) -> list[str]:
    """Ten annotator answers; in train/val a quarter of questions get one or two dissenters."""
    answers = [answer] * VQA_ANSWERS_PER_QUESTION
    if noisy and rng.random() < 0.25:
        others = [a for a in ANSWER_CATEGORIES[category] if a != answer]
        for i in rng.sample(range(VQA_ANSWERS_PER_QUESTION), rng.choice((1, 2))):
            answers[i] = rng.choice(others)
    return answers


# -- NLVR statements --------------------------------------------------------------------------------
SIDES = ("left", "right")
COUNT_PHRASES = ("one shape", "two shapes", "three shapes")
NLVR_TEMPLATES: dict[str, str] = {
    "more": "the {side} image has more shapes than the {other} image",
    "same_count": "the two images have the same number of shapes",
    "exact_count": "the {side} image contains exactly {count}",
    "both_color": "both images contain a {color} object",
    "both_shape": "both images contain a {shape}",
    "neither_color": "neither image contains a {color} object",
    "side_object": "there is a {color} {shape} in the {side} image",
    "side_shape": "there is a {shape} in the {side} image",
}
_SLOT_VALUES: dict[str, tuple[str, ...]] = {
    "side": SIDES, "other": SIDES, "count": COUNT_PHRASES, "color": tuple(COLORS), "shape": SHAPES,
}
_SLOT = re.compile(r"\{(\w+)\}")
_NLVR_PATTERNS = {
    kind: re.compile("^" + _SLOT.sub(lambda m: f"(?P<{m.group(1)}>{'|'.join(_SLOT_VALUES[m.group(1)])})", t) + "$")
    for kind, t in NLVR_TEMPLATES.items()
}


def statement_truth(kind: str, p: dict[str, str], left: Scene, right: Scene) -> bool:
    """The truth of one NLVR statement (kind + slot values) about an image pair."""
    scenes = {"left": left, "right": right}

    def has(scene: Scene, color: str | None = None, shape: str | None = None) -> bool:
        return any((color is None or o.color == color) and (shape is None or o.shape == shape) for o in scene)

    if kind == "more":
        return len(scenes[p["side"]]) > len(scenes[p["other"]])
    if kind == "same_count":
        return len(left) == len(right)
    if kind == "exact_count":
        return len(scenes[p["side"]]) == COUNT_PHRASES.index(p["count"]) + 1
    if kind == "both_color":
        return has(left, color=p["color"]) and has(right, color=p["color"])
    if kind == "both_shape":
        return has(left, shape=p["shape"]) and has(right, shape=p["shape"])
    if kind == "neither_color":
        return not has(left, color=p["color"]) and not has(right, color=p["color"])
    if kind == "side_object":
        return has(scenes[p["side"]], color=p["color"], shape=p["shape"])
    if kind == "side_shape":
        return has(scenes[p["side"]], shape=p["shape"])
    raise DataError(f"unknown NLVR statement kind {kind!r}; known: {', '.join(NLVR_TEMPLATES)}")


def parse_statement(sentence: str) -> tuple[str, dict[str, str]]:
    """The kind and slot values of a generated NLVR sentence (the inverse of the templates)."""
    for kind, pattern in _NLVR_PATTERNS.items():
        m = pattern.match(sentence)
        if m:
            return kind, m.groupdict()
    raise DataError(f"not a shapes-world NLVR sentence: {sentence!r}")


def nlvr_label(sentence: str, left: Scene, right: Scene) -> bool:
    """Re-compute a statement's label from its text and the two scene graphs."""
    kind, params = parse_statement(sentence)
    return statement_truth(kind, params, left, right)


def _statement_params(kind: str) -> list[dict[str, str]]:
    slots = _SLOT.findall(NLVR_TEMPLATES[kind])
    combos = [dict(zip(slots, values)) for values in itertools.product(*(_SLOT_VALUES[s] for s in slots))]
    return [c for c in combos if c.get("side") is None or c.get("side") != c.get("other")]


_ALL_STATEMENT_PARAMS = {kind: _statement_params(kind) for kind in NLVR_TEMPLATES}


def make_statement_pairs(scenes: Sequence[Scene], rng: random.Random, tries: int = 500) -> tuple[str, tuple[int, int], tuple[int, int]]:
    """A random statement with a pair of scenes where it is true and another where it is false.

    As in NLVR2, every sentence comes with both labels, so the text alone predicts nothing.
    Returns ``(sentence, true_pair, false_pair)`` as indices into ``scenes``.
    """
    for _ in range(tries):
        kind = rng.choice(list(NLVR_TEMPLATES))
        params = rng.choice(_ALL_STATEMENT_PARAMS[kind])
        found: dict[bool, tuple[int, int]] = {}
        for _ in range(tries):
            i, j = rng.sample(range(len(scenes)), 2)
            found.setdefault(statement_truth(kind, params, scenes[i], scenes[j]), (i, j))
            if len(found) == 2:
                return NLVR_TEMPLATES[kind].format(**params), found[True], found[False]
    raise ConfigError(f"generate_world: found no NLVR statement true for one pair and false for another among "
                      f"{len(scenes)} scenes; use more images per split")


# -- text about videos ------------------------------------------------------------------------------
def video_caption(clip: Clip, rng: random.Random) -> str:
    """``"a large red circle moves left and a small blue square moves right"``."""
    phrases = [f"a {m.size} {m.color} {m.shape} moves {m.direction}" for m in clip]
    return rng.choice(VIDEO_CAPTION_WRAPPERS).format(" and ".join(phrases))


def make_video_questions(clip: Clip, rng: random.Random, k: int) -> list[QA]:
    def name(m) -> str:  # (colour, shape) names a mover unless its partner looks the same but for size
        twin = sum((o.color, o.shape) == (m.color, m.shape) for o in clip) > 1
        return f"{m.size} {m.color} {m.shape}" if twin else f"{m.color} {m.shape}"

    def direction() -> QA:
        m = rng.choice(clip)
        return f"which way does the {name(m)} move?", m.direction, "direction"

    def color() -> QA:
        m = rng.choice(clip)
        return f"what color is the shape that moves {m.direction}?", m.color, "color"

    def shape() -> QA:
        m = rng.choice(clip)
        return f"what shape moves {m.direction}?", m.shape, "shape"

    def count() -> QA:
        return "how many shapes are there?", str(len(clip)), "count"

    def exist() -> QA:
        pairs = {(m.color, m.shape) for m in clip}
        if rng.random() < 0.5:
            c, s = rng.choice(sorted(pairs))
            return f"is there a {c} {s}?", "yes", "yesno"
        c, s = rng.choice([(c, s) for c in COLORS for s in SHAPES if (c, s) not in pairs])
        return f"is there a {c} {s}?", "no", "yesno"

    makers = [direction, color, shape, count, exist]
    return [make() for make in rng.sample(makers, min(k, len(makers)))]


# -- the world ------------------------------------------------------------------------------------
ANNOTATION_FILES = {
    "coco_karpathy_train": "coco_karpathy_train.json",
    "coco_karpathy_val": "coco_karpathy_val.json",
    "coco_karpathy_test": "coco_karpathy_test.json",
    "coco_karpathy_val_gt": "coco_karpathy_val_gt.json",
    "coco_karpathy_test_gt": "coco_karpathy_test_gt.json",
    "vqa_train": "vqa_train.json",
    "vqa_val": "vqa_val.json",
    "vqa_test": "vqa_test.json",
    "answer_list": "answer_list.json",
    "nlvr_train": "nlvr_train.json",
    "nlvr_dev": "nlvr_dev.json",
    "nlvr_test": "nlvr_test.json",
    "msrvtt_test": "msrvtt_test.jsonl",
    "videoqa_test": "videoqa_test.json",
    "videoqa_answer_list": "videoqa_answer_list.json",
    "pretrain": "pretrain.json",
    "scenes": "scenes.json",
}


@dataclass(frozen=True)
class WorldInfo:
    """Where a generated world lies and what a model must beat.

    ``files`` maps each annotation name (``"coco_karpathy_train"``, ``"vqa_test"``, ...,
    ``"manifest"``) to its absolute path. ``chance`` holds chance levels as fractions in [0, 1]:
    ``retrieval_t2i_r1`` / ``retrieval_i2t_r1`` = 1/n_test, ``vqa_acc`` and ``videoqa_acc`` = the
    accuracy of always giving the most common test answer, ``nlvr_acc`` = the majority class share
    of the test labels, ``video_t2v_r1`` / ``video_v2t_r1`` = 1/n_videos.
    """

    root: Path
    params: dict[str, Any]
    files: dict[str, Path]
    images: tuple[Path, ...]
    videos: tuple[Path, ...]
    counts: dict[str, int]
    chance: dict[str, float]
    heldout_triples: tuple[tuple[str, str, str], ...]
    test_heldout_fraction: float  # share of test images with at least one held-out triple
    reused: bool = False
    seconds: float = field(default=0.0, compare=False)

    @property
    def image_dir(self) -> Path:
        return self.root / "images"

    @property
    def video_dir(self) -> Path:
        return self.root / "videos"

    @property
    def annotation_dir(self) -> Path:
        return self.root / "annotations"


def _params(seed: Any, sizes: dict[str, Any], image_size: Any, num_frames: Any, fps: Any, image_format: Any) -> dict[str, Any]:
    params = {"seed": seed, **sizes, "image_size": image_size, "num_frames": num_frames, "fps": fps}
    for key, value in params.items():
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"generate_world: {key} must be an int, got {value!r}")
    minimum = {"n_train": 2, "n_val": 2, "n_test": 2, "n_videos": 2, "image_size": 24, "num_frames": 2, "fps": 1,
               "seed": -(2**63)}
    for key, low in minimum.items():
        if params[key] < low:
            raise ConfigError(f"generate_world: {key}={params[key]} is too small; use {key} >= {low}")
    if params["image_size"] % 2:
        raise ConfigError(f"generate_world: image_size={image_size} must be even (the mp4v codec needs even frame sides)")
    if image_format not in {"jpg", "png"}:
        raise ConfigError(f"generate_world: image_format={image_format!r}; use 'jpg' (BLIP-compatible ids) or 'png'")
    params["image_format"] = image_format
    return params


def default_root(params: dict[str, Any]) -> Path:
    """``<cache>/demo_worlds/shapes-<hash of the parameters>``."""
    from lavislite.common.config import get_cache_dir

    digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    return get_cache_dir() / "demo_worlds" / f"shapes-{digest}"


def _stream(seed: int, name: str) -> random.Random:
    """An independent random stream per component, so e.g. n_videos does not change the images."""
    return random.Random(f"lavislite-shapes/{seed}/{name}")


def _new_scenes(rng: random.Random, n: int, seen: set, exclude: frozenset, split: str) -> list[Scene]:
    scenes: list[Scene] = []
    for _ in range(2000 * n):
        scene = sample_scene(rng, exclude)
        if scene not in seen:
            seen.add(scene)
            scenes.append(scene)
            if len(scenes) == n:
                return scenes
    raise ConfigError(f"generate_world: could not find {n} distinct new {split} scenes; use a smaller n_{split}")


def _dump(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, ensure_ascii=True, separators=(",", ":")) + "\n", encoding="utf-8")


def _majority_accuracy(answers: Iterable[str]) -> float:
    counts = Counter(answers)
    return max(counts.values()) / sum(counts.values()) if counts else 0.0


def generate_world(root: str | Path | None = None, *, seed: int = 0, n_train: int | None = None,
                   n_val: int | None = None, n_test: int | None = None, n_videos: int | None = None,
                   image_size: int = 64, num_frames: int = 16, fps: int = 8, image_format: str = "jpg",
                   quick: bool = False) -> WorldInfo:
    """Write (or reuse) a shapes world under ``root`` (default: the lavislite cache) and describe it.

    Sizes left as None take ``QUICK_SIZES`` when ``quick`` else ``FULL_SIZES``. The same parameters
    give byte-identical annotation files; if ``root/manifest.json`` records the same parameters and
    every file is present the world is reused, otherwise the old world's files are replaced.
    """
    start = time.perf_counter()
    defaults = QUICK_SIZES if quick else FULL_SIZES
    given = {"n_train": n_train, "n_val": n_val, "n_test": n_test, "n_videos": n_videos}
    sizes = {k: defaults[k] if v is None else v for k, v in given.items()}
    params = _params(seed, sizes, image_size, num_frames, fps, image_format)
    root = Path(root).expanduser() if root is not None else default_root(params)

    manifest_path = root / MANIFEST
    old = _read_manifest(manifest_path) if manifest_path.is_file() else None
    if old is not None:
        info = _info_from_manifest(root, old, reused=True)
        if old.get("version") == WORLD_VERSION and old.get("params") == params and _complete(info):
            return _with_seconds(info, time.perf_counter() - start)
        _remove_world(root, old)

    manifest = _write_world(root, params)
    _dump(manifest_path, manifest)
    return _with_seconds(_info_from_manifest(root, manifest, reused=False), time.perf_counter() - start)


def _write_world(root: Path, params: dict[str, Any]) -> dict[str, Any]:
    """Generate everything; returns the manifest (written last by the caller, marking completion)."""
    seed, size, ext = params["seed"], params["image_size"], params["image_format"]
    for sub in ("images", "videos", "annotations"):
        (root / sub).mkdir(parents=True, exist_ok=True)

    triples = [(c, s, p) for c in COLORS for s in SHAPES for p in POSITIONS]
    heldout = frozenset(_stream(seed, "heldout").sample(triples, round(HELDOUT_FRACTION * len(triples))))
    seen: set = set()
    train_rng = _stream(seed, "scenes/train")
    scenes = {"train": [sample_scene(train_rng, heldout) for _ in range(params["n_train"])]}
    seen.update(scenes["train"])
    scenes["val"] = _new_scenes(_stream(seed, "scenes/val"), params["n_val"], seen, heldout, "val")
    scenes["test"] = _new_scenes(_stream(seed, "scenes/test"), params["n_test"], seen, frozenset(), "test")

    # Images: globally unique numbers at the end of the stem (the COCO gt id BLIP parses).
    image_paths: dict[str, list[str]] = {}
    scene_graphs: dict[str, Any] = {"images": {}, "videos": {}}
    number = 0
    width = max(6, len(str(sum(len(v) for v in scenes.values()))))
    for split in ("train", "val", "test"):
        image_paths[split] = []
        for scene in scenes[split]:
            rel = f"images/shapes_{split}_{number:0{width}d}.{ext}"
            save_image(render_scene(scene, size, np.random.default_rng([seed, 0, number])), root / rel)
            image_paths[split].append(rel)
            scene_graphs["images"][rel] = [_obj_dict(o) for o in scene]
            number += 1

    ann = root / "annotations"
    files = {name: f"annotations/{fname}" for name, fname in ANNOTATION_FILES.items()}

    # Captioning / retrieval (BLIP coco_karpathy_*.json) and the COCO-format ground truth.
    captions = {}
    for split in ("train", "val", "test"):
        rng = _stream(seed, f"captions/{split}")
        captions[split] = [make_captions(s, rng, CAPTIONS_PER_IMAGE[split]) for s in scenes[split]]
    train_ann = [{"image": p, "caption": c, "image_id": Path(p).stem}
                 for p, caps in zip(image_paths["train"], captions["train"]) for c in caps]
    _dump(ann / ANNOTATION_FILES["coco_karpathy_train"], train_ann)
    _dump(ann / ANNOTATION_FILES["pretrain"], [{"image": a["image"], "caption": a["caption"]} for a in train_ann])
    for split in ("val", "test"):
        _dump(ann / ANNOTATION_FILES[f"coco_karpathy_{split}"],
              [{"image": p, "caption": caps} for p, caps in zip(image_paths[split], captions[split])])
        gt_images, gt_anns = [], []
        for p, caps in zip(image_paths[split], captions[split]):
            image_id = int(Path(p).stem.split("_")[-1])
            gt_images.append({"id": image_id})
            gt_anns.extend({"image_id": image_id, "caption": c, "id": len(gt_anns) + i} for i, c in enumerate(caps))
        _dump(ann / ANNOTATION_FILES[f"coco_karpathy_{split}_gt"], {"images": gt_images, "annotations": gt_anns})

    # VQA.
    question_id = 0
    vqa: dict[str, list[dict[str, Any]]] = {}
    for split in ("train", "val", "test"):
        rng = _stream(seed, f"vqa/{split}")
        vqa[split] = []
        for p, scene in zip(image_paths[split], scenes[split]):
            for question, answer, category in make_questions(scene, rng, QUESTIONS_PER_IMAGE[split]):
                answers = _human_answers(answer, category, rng, noisy=split != "test")
                if split == "test":
                    vqa[split].append({"question_id": question_id, "question": question, "image": p, "answer": answers})
                else:
                    vqa[split].append({"question_id": question_id, "question": question, "answer": answers,
                                       "image": p, "dataset": "vqa"})
                question_id += 1
        _dump(ann / ANNOTATION_FILES[f"vqa_{split}"], vqa[split])
    answer_list = sorted({a for split in vqa.values() for q in split for a in q["answer"]})
    _dump(ann / ANNOTATION_FILES["answer_list"], answer_list)

    # NLVR2: each sentence twice, with a pair where it is true and a pair where it is false.
    nlvr: dict[str, list[dict[str, Any]]] = {}
    for split, name in (("train", "nlvr_train"), ("val", "nlvr_dev"), ("test", "nlvr_test")):
        rng = _stream(seed, f"nlvr/{split}")
        items = []
        for _ in range(STATEMENTS_PER_IMAGE[split] * len(scenes[split])):
            sentence, true_pair, false_pair = make_statement_pairs(scenes[split], rng)
            labelled = [(true_pair, "True"), (false_pair, "False")]
            rng.shuffle(labelled)
            items.extend({"images": [image_paths[split][i], image_paths[split][j]], "sentence": sentence, "label": label}
                         for (i, j), label in labelled)
        nlvr[split] = items
        _dump(ann / ANNOTATION_FILES[name], items)

    # Videos: appearance (the multiset of size/colour/shape) unique per video, so each caption
    # identifies its video even for a model that ignores motion.
    rng = _stream(seed, "videos")
    clips: list[Clip] = []
    looks: set = set()
    for _ in range(2000 * params["n_videos"]):
        clip = sample_clip(rng)
        look = tuple(sorted((m.size, m.color, m.shape) for m in clip))
        if look not in looks:
            looks.add(look)
            clips.append(clip)
            if len(clips) == params["n_videos"]:
                break
    else:
        raise ConfigError(f"generate_world: could not find {params['n_videos']} distinct videos; use a smaller n_videos")
    video_paths, msrvtt, videoqa = [], [], []
    text_rng = _stream(seed, "videos/text")
    for k, clip in enumerate(clips):
        clip_name = f"shapes_video_{k:04d}"
        rel = f"videos/{clip_name}.mp4"
        frames = render_clip(clip, size, params["num_frames"], np.random.default_rng([seed, 1, k]))
        write_video(frames, root / rel, params["fps"])
        video_paths.append(rel)
        scene_graphs["videos"][clip_name] = [
            {"color": m.color, "shape": m.shape, "size": m.size, "direction": m.direction} for m in clip]
        msrvtt.append({"clip_name": clip_name, "caption": video_caption(clip, text_rng)})
        for question, answer, _ in make_video_questions(clip, text_rng, QUESTIONS_PER_VIDEO):
            videoqa.append({"question_id": question_id, "question": question, "answer": answer,
                            "video": f"{clip_name}.mp4"})
            question_id += 1
    (ann / ANNOTATION_FILES["msrvtt_test"]).write_text(
        "".join(json.dumps(m, ensure_ascii=True) + "\n" for m in msrvtt), encoding="utf-8")
    _dump(ann / ANNOTATION_FILES["videoqa_test"], videoqa)
    _dump(ann / ANNOTATION_FILES["videoqa_answer_list"], sorted({q["answer"] for q in videoqa}))

    scene_graphs["heldout_triples"] = sorted(list(t) for t in heldout)
    _dump(ann / ANNOTATION_FILES["scenes"], scene_graphs)

    n_test = params["n_test"]
    test_vqa_answers = [Counter(q["answer"]).most_common(1)[0][0] for q in vqa["test"]]
    return {
        "generator": "lavislite.demo.world",
        "version": WORLD_VERSION,
        "params": params,
        "files": files,
        "images": [p for split in ("train", "val", "test") for p in image_paths[split]],
        "videos": video_paths,
        "counts": {
            **{f"images_{s}": len(image_paths[s]) for s in ("train", "val", "test")},
            "captions_train": len(train_ann),
            **{f"vqa_{s}": len(vqa[s]) for s in ("train", "val", "test")},
            "answer_list": len(answer_list),
            "nlvr_train": len(nlvr["train"]), "nlvr_dev": len(nlvr["val"]), "nlvr_test": len(nlvr["test"]),
            "videos": len(video_paths),
            "videoqa_test": len(videoqa),
        },
        "chance": {
            "retrieval_t2i_r1": 1.0 / n_test,
            "retrieval_i2t_r1": 1.0 / n_test,
            "vqa_acc": _majority_accuracy(test_vqa_answers),
            "nlvr_acc": _majority_accuracy(item["label"] for item in nlvr["test"]),
            "video_t2v_r1": 1.0 / len(video_paths),
            "video_v2t_r1": 1.0 / len(video_paths),
            "videoqa_acc": _majority_accuracy(q["answer"] for q in videoqa),
        },
        "heldout_triples": sorted(list(t) for t in heldout),
        "test_heldout_fraction": sum(any((o.color, o.shape, o.position) in heldout for o in s)
                                     for s in scenes["test"]) / n_test,
    }


def _obj_dict(obj: Obj) -> dict[str, str]:
    return {"color": obj.color, "shape": obj.shape, "size": obj.size, "position": obj.position}


def _read_manifest(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # unreadable: treated as no world, and regenerated
    return data if isinstance(data, dict) and data.get("generator") == "lavislite.demo.world" else None


def _info_from_manifest(root: Path, m: dict[str, Any], reused: bool) -> WorldInfo:
    files = {name: root / rel for name, rel in m.get("files", {}).items()}
    files["manifest"] = root / MANIFEST
    return WorldInfo(
        root=root, params=dict(m.get("params", {})), files=files,
        images=tuple(root / p for p in m.get("images", [])), videos=tuple(root / p for p in m.get("videos", [])),
        counts=dict(m.get("counts", {})), chance=dict(m.get("chance", {})),
        heldout_triples=tuple(tuple(t) for t in m.get("heldout_triples", [])),
        test_heldout_fraction=float(m.get("test_heldout_fraction", 0.0)), reused=reused,
    )


def _complete(info: WorldInfo) -> bool:
    return all(p.is_file() for p in itertools.chain(info.files.values(), info.images, info.videos))


def _remove_world(root: Path, manifest: dict[str, Any]) -> None:
    """Delete the files an older world listed (only those, and only inside root)."""
    (root / MANIFEST).unlink(missing_ok=True)
    listed = itertools.chain(manifest.get("files", {}).values(), manifest.get("images", []), manifest.get("videos", []))
    resolved_root = root.resolve()
    for rel in listed:
        path = (root / str(rel)).resolve()
        if resolved_root in path.parents:
            path.unlink(missing_ok=True)


def _with_seconds(info: WorldInfo, seconds: float) -> WorldInfo:
    from dataclasses import replace

    return replace(info, seconds=seconds)


def load_world(root: str | Path) -> WorldInfo:
    """The WorldInfo of a world generated earlier under ``root`` (raises DataError if there is none)."""
    root = Path(root).expanduser()
    manifest = _read_manifest(root / MANIFEST) if (root / MANIFEST).is_file() else None
    if manifest is None:
        raise DataError(f"{root / MANIFEST}: no shapes world here; create one with "
                        f"lavislite.demo.generate_world({str(root)!r})")
    return _info_from_manifest(root, manifest, reused=True)


def all_texts(world: WorldInfo | str | Path) -> list[str]:
    """Every caption, question, answer and statement of a world (first-seen order, no repeats),
    e.g. to train the demo's WordPiece vocabulary."""
    info = world if isinstance(world, WorldInfo) else load_world(world)
    texts: dict[str, None] = {}

    def add(*items: str) -> None:
        for item in items:
            texts.setdefault(item, None)

    def load(name: str) -> Any:
        path = info.files[name]
        try:
            if path.suffix == ".jsonl":
                return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: cannot read this annotation file ({exc}); regenerate the world "
                            f"with lavislite.demo.generate_world") from exc

    for item in load("coco_karpathy_train"):
        add(item["caption"])
    for name in ("coco_karpathy_val", "coco_karpathy_test"):
        for item in load(name):
            add(*item["caption"])
    for name in ("vqa_train", "vqa_val", "vqa_test", "videoqa_test"):
        for item in load(name):
            add(item["question"])
            add(*(item["answer"] if isinstance(item["answer"], list) else [item["answer"]]))
    add(*load("answer_list"), *load("videoqa_answer_list"))
    for name in ("nlvr_train", "nlvr_dev", "nlvr_test"):
        for item in load(name):
            add(item["sentence"])
    for item in load("msrvtt_test"):
        add(item["caption"])
    return list(texts)
