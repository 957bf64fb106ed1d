"""A noisy "web" in the shapes world: images with one alt-text each, a stated share of them noisy the
way web alt-texts are, written as webdataset shards with the ground truth of which texts are noise.

``generate_web(world, n_images, noise_rate)`` samples new scenes (none equal to a test scene, none using
the world's held-out triples, so the test split stays held out), renders them like the world's images
and gives each one alt-text: a correct caption with probability ``1 - noise_rate``, otherwise one of

* ``wrong_attribute``: a correct caption with one colour, shape, size or position changed;
* ``partial``: only some of the objects, or an object without its colour and position;
* ``unrelated``: the caption of another scene;
* ``filename``: a camera or upload file name (``IMG_4821.jpg``);
* ``boilerplate``: page furniture (``click to enlarge``, ``stock photo``).

Layout under ``<world>/web-<hash>/``: ``{00000..}.tar`` (members ``<key>.jpg`` and ``<key>.json`` =
``{"caption": alt-text, "noise": type or null}``), ``truth.json`` (key -> noise type or null) and
``manifest.json`` (the parameters, written last; a second call with them reuses the files).
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lavislite.common.errors import ConfigError
from lavislite.demo.shapes import (
    COLORS,
    POSITIONS,
    SHAPES,
    SIZES,
    Obj,
    Scene,
    canonical,
    render_scene,
    sample_scene,
)

NOISE_TYPES = ("wrong_attribute", "partial", "unrelated", "filename", "boilerplate")
WEB_VERSION = 1
FILE_PREFIXES = ("IMG_", "DSC", "DSC_", "image", "photo", "pic", "Screenshot_", "upload_", "shapes_final_v")
FILE_EXTS = ("jpg", "jpeg", "png", "JPG")
BOILERPLATE = (
    "click to enlarge", "stock photo", "image may contain shapes", "all rights reserved", "download free vector",
    "view full size", "photo by our staff", "thumbnail", "no description available", "see more images",
    "royalty free illustration", "share this image",
)


@dataclass(frozen=True)
class WebInfo:
    """Where the web split lies: its shards, the ground truth and the parameters."""

    root: Path
    shards: tuple[Path, ...]
    truth: dict[str, str | None]  # sample key -> noise type, None for a correct alt-text
    params: dict[str, Any]
    reused: bool = False

    @property
    def noisy_keys(self) -> set[str]:
        return {k for k, v in self.truth.items() if v is not None}


def _caption(scene: Scene, rng: random.Random) -> str:
    from lavislite.demo.world import make_captions

    return make_captions(scene, rng, 1)[0]


def _wrong_attribute(scene: Scene, rng: random.Random) -> str:
    objs = list(scene)
    i = rng.randrange(len(objs))
    o = objs[i]
    attr = rng.choice(("color", "shape", "size", "position"))
    if attr == "position":
        free = [p for p in POSITIONS if p not in {x.position for x in objs}]
        if not free:
            attr = "color"
        else:
            objs[i] = Obj(o.color, o.shape, o.size, rng.choice(free))
    if attr == "color":
        objs[i] = Obj(rng.choice([c for c in COLORS if c != o.color]), o.shape, o.size, o.position)
    elif attr == "shape":
        objs[i] = Obj(o.color, rng.choice([s for s in SHAPES if s != o.shape]), o.size, o.position)
    elif attr == "size":
        objs[i] = Obj(o.color, o.shape, next(s for s in SIZES if s != o.size), o.position)
    return _caption(canonical(objs), rng)


def _partial(scene: Scene, rng: random.Random) -> str:
    if len(scene) > 1 and rng.random() < 0.6:
        keep = sorted(rng.sample(range(len(scene)), rng.randrange(1, len(scene))))
        return _caption(tuple(scene[i] for i in keep), rng)
    o = rng.choice(scene)
    return rng.choice((f"a {o.shape}", f"a {o.size} {o.shape}", "some shapes", f"a {o.shape} on a dark background"))


def _filename(rng: random.Random) -> str:
    return f"{rng.choice(FILE_PREFIXES)}{rng.randrange(10, 99999)}.{rng.choice(FILE_EXTS)}"


def alt_text(scene: Scene, other: Scene, noise: str | None, rng: random.Random) -> str:
    """The alt-text of ``scene`` for a noise type (None: correct); ``other`` is a different scene for ``unrelated``."""
    if noise is None:
        return _caption(scene, rng)
    if noise == "wrong_attribute":
        return _wrong_attribute(scene, rng)
    if noise == "partial":
        return _partial(scene, rng)
    if noise == "unrelated":
        return _caption(other, rng)
    if noise == "filename":
        return _filename(rng)
    if noise == "boilerplate":
        return rng.choice(BOILERPLATE)
    raise ConfigError(f"unknown web noise type {noise!r}; known: {', '.join(NOISE_TYPES)}")


def _test_scenes(world: Any) -> set[Scene]:
    graphs = json.loads(Path(world.files["scenes"]).read_text(encoding="utf-8"))["images"]
    test = json.loads(Path(world.files["coco_karpathy_test"]).read_text(encoding="utf-8"))
    return {canonical(Obj(**o) for o in graphs[row["image"]]) for row in test}


def generate_web(world: Any, n_images: int = 1200, noise_rate: float = 0.5, *, images_per_shard: int = 200,
                 seed: int = 0, image_size: int | None = None) -> WebInfo:
    """Write (or reuse) the noisy web split next to ``world`` (a :class:`~lavislite.demo.world.WorldInfo`)."""
    if not 0.0 <= float(noise_rate) <= 1.0:
        raise ConfigError(f"generate_web: noise_rate={noise_rate!r}; use a fraction in [0, 1]")
    if int(n_images) < 1 or int(images_per_shard) < 1:
        raise ConfigError(f"generate_web: n_images={n_images} and images_per_shard={images_per_shard} must be >= 1")
    size = int(image_size or world.params.get("image_size", 64))
    params = {"version": WEB_VERSION, "seed": int(seed), "n_images": int(n_images), "noise_rate": float(noise_rate),
              "images_per_shard": int(images_per_shard), "image_size": size, "world": world.params}
    digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    root = Path(world.root) / f"web-{digest}"
    n_shards = -(-int(n_images) // int(images_per_shard))
    shards = tuple(root / f"{i:05d}.tar" for i in range(n_shards))
    manifest = root / "manifest.json"
    if manifest.is_file() and all(s.is_file() for s in shards):
        old = json.loads(manifest.read_text(encoding="utf-8"))
        if old.get("params") == params:
            truth = json.loads((root / "truth.json").read_text(encoding="utf-8"))
            return WebInfo(root, shards, truth, params, reused=True)
    root.mkdir(parents=True, exist_ok=True)
    manifest.unlink(missing_ok=True)

    heldout = frozenset(tuple(t) for t in world.heldout_triples)
    avoid = _test_scenes(world)
    scene_rng, text_rng = random.Random(f"lavislite-web/{seed}/scenes"), random.Random(f"lavislite-web/{seed}/texts")
    scenes: list[Scene] = []
    while len(scenes) < n_images:
        s = sample_scene(scene_rng, heldout)
        if s not in avoid:
            scenes.append(s)
    n_noisy = round(noise_rate * n_images)  # exactly the stated rate, at random positions
    noisy = set(text_rng.sample(range(n_images), n_noisy))
    truth: dict[str, str | None] = {}
    for k, shard in enumerate(shards):
        with tarfile.open(shard.with_suffix(".tar.tmp"), "w", format=tarfile.USTAR_FORMAT) as tar:
            for i in range(k * images_per_shard, min((k + 1) * images_per_shard, n_images)):
                key = f"web{i:06d}"
                noise = text_rng.choice(NOISE_TYPES) if i in noisy else None
                other = scenes[(i + 1 + text_rng.randrange(n_images - 1)) % n_images] if n_images > 1 else scenes[i]
                text = alt_text(scenes[i], other, noise, text_rng)
                truth[key] = noise
                buf = io.BytesIO()
                render_scene(scenes[i], size, np.random.default_rng([seed, 7, i])).save(buf, format="JPEG", quality=95, subsampling=0)
                _add(tar, f"{key}.jpg", buf.getvalue())
                _add(tar, f"{key}.json", json.dumps({"caption": text, "noise": noise}).encode("utf-8"))
        shard.with_suffix(".tar.tmp").replace(shard)
    (root / "truth.json").write_text(json.dumps(truth, indent=0) + "\n", encoding="utf-8")
    counts = {t: sum(v == t for v in truth.values()) for t in NOISE_TYPES}
    manifest.write_text(json.dumps({"params": params, "noise_counts": counts, "noisy": n_noisy}, indent=1) + "\n", encoding="utf-8")
    return WebInfo(root, shards, truth, params)


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    tar.addfile(info, io.BytesIO(data))


def web_texts(web: WebInfo) -> list[str]:
    """Every alt-text of the web split (for the demo's vocabulary)."""
    out: list[str] = []
    for shard in web.shards:
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                if m.name.endswith(".json"):
                    out.append(json.loads(tar.extractfile(m).read())["caption"])
    return out
