"""The synthetic shapes world: determinism, file formats, media, fairness and the manifest."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict

import pytest
from PIL import Image

from lavislite.common.errors import ConfigError, DataError
from lavislite.demo import WorldInfo, all_texts, generate_world, load_world
from lavislite.demo.shapes import COLORS, PLURALS, SHAPES, SIZES, Obj
from lavislite.demo.world import ANNOTATION_FILES, POSITION_PHRASES, nlvr_label

NUM_FRAMES = 12


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> WorldInfo:
    return generate_world(tmp_path_factory.mktemp("world"), seed=3, quick=True, num_frames=NUM_FRAMES)


def load(world: WorldInfo, name: str):
    path = world.files[name]
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines()]
    return json.loads(path.read_text())


def scenes(world: WorldInfo) -> dict[str, tuple[Obj, ...]]:
    graphs = load(world, "scenes")["images"]
    return {path: tuple(Obj(**o) for o in objs) for path, objs in graphs.items()}


def blip_gt_id(image: str) -> int:
    # BLIP's coco_karpathy_caption_eval parsing, quirk included (strip is a character set).
    return int(image.split("/")[-1].strip(".jpg").split("_")[-1])


# -- determinism and reuse ----------------------------------------------------------------------
def test_same_seed_gives_byte_identical_annotations(world, tmp_path):
    again = generate_world(tmp_path / "again", seed=3, quick=True, num_frames=NUM_FRAMES)
    assert not again.reused
    for name in ANNOTATION_FILES:
        assert again.files[name].read_bytes() == world.files[name].read_bytes(), name
    other = generate_world(tmp_path / "other", seed=4, quick=True, num_frames=NUM_FRAMES)
    assert other.files["coco_karpathy_test"].read_bytes() != world.files["coco_karpathy_test"].read_bytes()


def test_manifest_reuse_and_regeneration(tmp_path):
    first = generate_world(tmp_path, seed=0, quick=True, n_train=10, num_frames=4)
    stamp = first.files["vqa_train"].stat().st_mtime_ns
    second = generate_world(tmp_path, seed=0, quick=True, n_train=10, num_frames=4)
    assert second.reused and second.files["vqa_train"].stat().st_mtime_ns == stamp
    assert second.counts == first.counts and second.chance == first.chance
    assert load_world(tmp_path).params == first.params

    # A missing file means the world is incomplete: regenerate rather than reuse.
    first.images[0].unlink()
    assert not generate_world(tmp_path, seed=0, quick=True, n_train=10, num_frames=4).reused
    assert first.images[0].is_file()

    # Other parameters replace the old world, including its now-unlisted images.
    smaller = generate_world(tmp_path, seed=0, quick=True, n_train=4, num_frames=4)
    assert not smaller.reused
    on_disk = sorted(p.relative_to(tmp_path) for p in (tmp_path / "images").iterdir())
    assert on_disk == sorted(p.relative_to(tmp_path) for p in smaller.images)


def test_default_root_is_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LAVISLITE_CACHE", str(tmp_path))
    info = generate_world(seed=1, quick=True, n_videos=2, num_frames=4)
    assert tmp_path in info.root.parents and info.files["manifest"].is_file()


def test_bad_parameters_raise_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="n_test"):
        generate_world(tmp_path, n_test=1, quick=True)
    with pytest.raises(ConfigError, match="image_size"):
        generate_world(tmp_path, image_size=63, quick=True)
    with pytest.raises(ConfigError, match="image_format"):
        generate_world(tmp_path, image_format="gif", quick=True)
    with pytest.raises(DataError, match="generate_world"):
        load_world(tmp_path / "nothing")


# -- formats ------------------------------------------------------------------------------------
def test_caption_files(world):
    train = load(world, "coco_karpathy_train")
    assert train and all(set(a) == {"image", "caption", "image_id"} for a in train)
    assert all(isinstance(a["caption"], str) and isinstance(a["image_id"], str) for a in train)
    assert all(a["image"].startswith("images/shapes_train_") for a in train)
    for split in ("val", "test"):
        items = load(world, f"coco_karpathy_{split}")
        assert len(items) == world.params[f"n_{split}"]
        assert all(set(a) == {"image", "caption"} and len(a["caption"]) == 5 for a in items)
        gt = load(world, f"coco_karpathy_{split}_gt")
        assert [im["id"] for im in gt["images"]] == [blip_gt_id(a["image"]) for a in items]
        by_id = defaultdict(list)
        for ann in gt["annotations"]:
            assert set(ann) == {"image_id", "caption", "id"}
            by_id[ann["image_id"]].append(ann["caption"])
        assert len({ann["id"] for ann in gt["annotations"]}) == len(gt["annotations"])
        assert {blip_gt_id(a["image"]): a["caption"] for a in items} == dict(by_id)
    pretrain = load(world, "pretrain")
    assert all(set(a) == {"image", "caption"} for a in pretrain)
    assert {a["image"] for a in pretrain} == {a["image"] for a in train}
    numbers = [blip_gt_id(str(p.relative_to(world.root))) for p in world.images]
    assert len(set(numbers)) == len(numbers)


def test_vqa_files(world):
    answer_list = load(world, "answer_list")
    assert len(answer_list) == len(set(answer_list))
    ids = []
    for split in ("train", "val", "test"):
        items = load(world, f"vqa_{split}")
        keys = {"question_id", "question", "image", "answer"} | ({"dataset"} if split != "test" else set())
        for q in items:
            assert set(q) == keys
            assert isinstance(q["question_id"], int) and q["question"].endswith("?")
            assert len(q["answer"]) == 10 and set(q["answer"]) <= set(answer_list)
            assert q["image"].startswith(f"images/shapes_{split}_")
            if split != "test":
                assert q["dataset"] == "vqa"
            else:  # test answers are unanimous, so accuracy is exact
                assert len(set(q["answer"])) == 1
        ids += [q["question_id"] for q in items]
    assert len(ids) == len(set(ids))


def test_nlvr_files(world):
    for name in ("nlvr_train", "nlvr_dev", "nlvr_test"):
        items = load(world, name)
        assert all(set(a) == {"images", "sentence", "label"} and len(a["images"]) == 2 for a in items)
        labels = Counter(a["label"] for a in items)
        assert set(labels) == {"True", "False"} and labels["True"] == labels["False"]


def test_video_files(world):
    msrvtt = load(world, "msrvtt_test")
    assert [set(m) for m in msrvtt] == [{"clip_name", "caption"}] * world.params["n_videos"]
    assert [world.video_dir / f"{m['clip_name']}.mp4" for m in msrvtt] == list(world.videos)
    captions = [m["caption"] for m in msrvtt]
    assert len(set(captions)) == len(captions)
    answers = load(world, "videoqa_answer_list")
    clips = {m["clip_name"] for m in msrvtt}
    for q in load(world, "videoqa_test"):
        assert set(q) == {"question_id", "question", "answer", "video"}
        assert isinstance(q["question_id"], int) and isinstance(q["answer"], str) and q["answer"] in answers
        assert q["video"].endswith(".mp4") and q["video"][:-4] in clips


def test_images_are_readable_at_the_requested_size(world, tmp_path):
    assert len(world.images) == sum(world.params[k] for k in ("n_train", "n_val", "n_test"))
    for path in world.images:
        with Image.open(path) as im:
            assert im.format == "JPEG" and im.size == (64, 64) and im.mode == "RGB"
    small = generate_world(tmp_path, quick=True, image_size=40, image_format="png", n_videos=2, num_frames=4)
    with Image.open(small.images[0]) as im:
        assert im.format == "PNG" and im.size == (40, 40)


def test_videos_read_back_with_cv2_and_decord(world):
    import cv2
    import decord

    for path in world.videos:
        reader = decord.VideoReader(str(path))
        assert len(reader) == NUM_FRAMES and reader[0].shape == (64, 64, 3)
        capture = cv2.VideoCapture(str(path))
        frames = 0
        while capture.read()[0]:
            frames += 1
        capture.release()
        assert frames == NUM_FRAMES


# -- content ------------------------------------------------------------------------------------
_OBJECT = re.compile(
    rf"a ({'|'.join(SIZES)}) ({'|'.join(COLORS)}) ({'|'.join(SHAPES)}) ({'|'.join(POSITION_PHRASES.values())})")
_PHRASE_TO_POSITION = {v: k for k, v in POSITION_PHRASES.items()}


def test_every_caption_names_exactly_its_scene(world):
    graphs = scenes(world)
    items = [(a["image"], [a["caption"]]) for a in load(world, "coco_karpathy_train")]
    items += [(a["image"], a["caption"]) for s in ("val", "test") for a in load(world, f"coco_karpathy_{s}")]
    for image, captions in items:
        for caption in captions:
            found = {Obj(c, s, z, _PHRASE_TO_POSITION[p]) for z, c, s, p in _OBJECT.findall(caption)}
            assert found == set(graphs[image]), caption
            assert len(caption.split()) <= 30  # BLIP's pre_caption(..., 30) keeps every word


def test_test_captions_identify_their_image_and_scenes_are_held_out(world):
    graphs = scenes(world)
    for split in ("val", "test"):
        owner = {}
        for a in load(world, f"coco_karpathy_{split}"):
            for caption in a["caption"]:
                assert owner.setdefault(caption, a["image"]) == a["image"]
    train = {graphs[p] for p in graphs if "_train_" in p}
    val = [graphs[p] for p in graphs if "_val_" in p]
    test = [graphs[p] for p in graphs if "_test_" in p]
    assert len(set(test)) == len(test) and len(set(val)) == len(val)
    assert len(train) > world.params["n_train"] // 2  # train scenes are varied, not one scene repeated
    assert len({tuple(a["caption"]) for a in load(world, "coco_karpathy_test")}) == len(test)
    assert not (set(test) & train) and not (set(test) & set(val)) and not (set(val) & train)
    heldout = {tuple(t) for t in world.heldout_triples}
    assert heldout
    for scene in list(train) + val:
        assert not any((o.color, o.shape, o.position) in heldout for o in scene)
    with_heldout = sum(any((o.color, o.shape, o.position) in heldout for o in s) for s in test)
    assert world.test_heldout_fraction == with_heldout / len(test)


def _oracle(question: str, scene: tuple[Obj, ...]) -> str:
    """An independent answerer for the image question templates."""
    color, shape, size = "|".join(COLORS), "|".join(SHAPES), "|".join(SIZES)
    where = "|".join(POSITION_PHRASES.values())
    plural = {v: k for k, v in PLURALS.items()}

    def pick(**attrs):
        hits = [o for o in scene if all(getattr(o, k) == v for k, v in attrs.items())]
        assert len(hits) == 1, (question, scene)
        return hits[0]

    patterns = [
        (rf"what color is the shape ({where})\?", lambda p: pick(position=_PHRASE_TO_POSITION[p]).color),
        (rf"what color is the ({shape}) ({where})\?", lambda s, p: pick(shape=s, position=_PHRASE_TO_POSITION[p]).color),
        (rf"what color is the ({shape})\?", lambda s: pick(shape=s).color),
        (rf"what shape is ({where})\?", lambda p: pick(position=_PHRASE_TO_POSITION[p]).shape),
        (rf"what shape is the ({color}) object\?", lambda c: pick(color=c).shape),
        (r"how many shapes are there\?", lambda: str(len(scene))),
        (rf"how many ({color}) shapes are there\?", lambda c: str(sum(o.color == c for o in scene))),
        (rf"how many ({'|'.join(plural)}) are there\?", lambda s: str(sum(o.shape == plural[s] for o in scene))),
        (rf"is there a shape ({where})\?",
         lambda p: "yes" if any(o.position == _PHRASE_TO_POSITION[p] for o in scene) else "no"),
        (rf"is there a ({color}) ({shape})\?",
         lambda c, s: "yes" if any((o.color, o.shape) == (c, s) for o in scene) else "no"),
        (rf"where is the ({size}) ({color}) ({shape})\?", lambda z, c, s: pick(size=z, color=c, shape=s).position),
        (rf"where is the ({color}) ({shape})\?", lambda c, s: pick(color=c, shape=s).position),
        (rf"what size is the ({color}) ({shape}) ({where})\?",
         lambda c, s, p: pick(color=c, shape=s, position=_PHRASE_TO_POSITION[p]).size),
        (rf"what size is the ({color}) ({shape})\?", lambda c, s: pick(color=c, shape=s).size),
    ]
    for pattern, answer in patterns:
        m = re.fullmatch(pattern, question)
        if m:
            return answer(*m.groups())
    raise AssertionError(f"unknown question template: {question}")


def test_vqa_answers_match_the_scene_graph(world):
    graphs = scenes(world)
    for split in ("train", "val", "test"):
        for q in load(world, f"vqa_{split}"):
            majority = Counter(q["answer"]).most_common(1)[0][0]
            assert majority == _oracle(q["question"], graphs[q["image"]])


def test_nlvr_labels_recompute_from_the_scene_graph(world):
    graphs = scenes(world)
    for name in ("nlvr_train", "nlvr_dev", "nlvr_test"):
        labels_per_sentence = defaultdict(set)
        for item in load(world, name):
            left, right = (graphs[p] for p in item["images"])
            assert nlvr_label(item["sentence"], left, right) == (item["label"] == "True"), item
            labels_per_sentence[item["sentence"]].add(item["label"])
        # Each sentence comes with both labels, so the text alone predicts nothing.
        assert all(labels == {"True", "False"} for labels in labels_per_sentence.values())


def test_video_text_matches_the_clip(world):
    clips = load(world, "scenes")["videos"]
    looks = set()
    for m in load(world, "msrvtt_test"):
        movers = clips[m["clip_name"]]
        for mover in movers:
            assert f"a {mover['size']} {mover['color']} {mover['shape']} moves {mover['direction']}" in m["caption"]
        look = tuple(sorted((o["size"], o["color"], o["shape"]) for o in movers))
        assert look not in looks  # appearance alone identifies each video
        looks.add(look)
    for q in load(world, "videoqa_test"):
        movers = clips[q["video"][:-4]]
        if q["question"] == "how many shapes are there?":
            assert q["answer"] == str(len(movers))
        elif q["question"].startswith("which way does"):
            assert q["answer"] in {o["direction"] for o in movers}
        elif q["question"].startswith("is there a"):
            c, s = q["question"][len("is there a "):-1].split()
            assert q["answer"] == ("yes" if any((o["color"], o["shape"]) == (c, s) for o in movers) else "no")
        else:
            m = re.fullmatch(r"what (color is the shape that moves|shape moves) (\w+)\?", q["question"])
            assert m, q["question"]
            mover = next(o for o in movers if o["direction"] == m.group(2))
            assert q["answer"] == (mover["color"] if m.group(1).startswith("color") else mover["shape"])


def test_chance_levels_and_counts(world):
    chance = world.chance
    assert chance["retrieval_t2i_r1"] == pytest.approx(1 / world.params["n_test"])
    assert chance["video_t2v_r1"] == pytest.approx(1 / world.params["n_videos"])
    assert chance["nlvr_acc"] == 0.5
    answers = Counter(q["answer"][0] for q in load(world, "vqa_test"))
    assert chance["vqa_acc"] == pytest.approx(max(answers.values()) / sum(answers.values()))
    assert 0 < chance["videoqa_acc"] <= 1
    assert world.counts["images_test"] == world.params["n_test"]
    assert world.counts["nlvr_test"] == len(load(world, "nlvr_test"))


def test_all_texts_covers_every_kind_of_text(world):
    texts = all_texts(world)
    assert len(texts) == len(set(texts)) and texts == all_texts(world.root)
    expected = {load(world, "coco_karpathy_train")[0]["caption"], load(world, "coco_karpathy_test")[0]["caption"][4],
                load(world, "vqa_test")[0]["question"], load(world, "nlvr_dev")[0]["sentence"],
                load(world, "msrvtt_test")[0]["caption"], load(world, "videoqa_test")[0]["question"]}
    assert expected <= set(texts) and set(load(world, "answer_list")) <= set(texts)
