"""The HTTP service on a loopback port: every head, dynamic batching, the bearer token, bad inputs, paths."""

import io
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

requests = pytest.importorskip("requests", reason="requests is in the [test] extra")

from lavislite.serve.app import ServeConfig, create_app
from lavislite.serve.heads import Heads
from lavislite.serve.images import Limits
from lavislite.serve.search import Searcher
from lavislite.serve.server import BackgroundServer

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def png(arr) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(arr, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def heads(loaded, world_index):
    _, index = world_index
    heads = Heads(caption=loaded("blip_caption"), vqa=loaded("blip_vqa"), retrieval=loaded("blip_retrieval"),
                  searcher=Searcher.open(str(index), loaded("blip_retrieval")))
    heads.decode.update(num_beams=2, max_length=8, min_length=2)
    return heads


@pytest.fixture(scope="module")
def server(heads, world_index, tmp_path_factory):
    """A token-protected server with one image root holding the world images, a file and a link out of the root."""
    images, _ = world_index
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.png").write_bytes(png(np.zeros((8, 8, 3))))
    link = images / "link_out.png"
    if not link.exists():
        os.symlink(outside / "secret.png", link)
    config = ServeConfig(token=TOKEN, limits=Limits(max_upload_bytes=2**20, max_pixels=4_000_000, max_text_chars=500),
                         image_roots=(images,), max_batch=8, max_wait_ms=200)
    app = create_app(heads, config)
    with BackgroundServer(app) as url:
        assert url.startswith("http://127.0.0.1:")
        yield url, app, outside


@pytest.fixture(scope="module")
def good_image(world_index):
    images, _ = world_index
    return (images / "scene00.png").read_bytes()


def post(url, path, data=None, image=None, headers=AUTH):
    files = {"image": ("x.png", image, "image/png")} if image is not None else None
    return requests.post(url + path, data=data or {}, files=files, headers=headers, timeout=120)


def test_every_head_answers(server, good_image):
    url, _, _ = server
    info = requests.get(url + "/api/info", headers=AUTH, timeout=30).json()
    assert set(info["heads"]) == {"caption", "vqa", "match", "classify", "search"} and info["index"]["images"] == 12
    cap = post(url, "/api/caption", image=good_image)
    assert cap.status_code == 200 and isinstance(cap.json()["caption"], str)
    assert post(url, "/api/caption", {"prompt": "a photo of"}, good_image).status_code == 200
    ans = post(url, "/api/vqa", {"question": "what color is the circle?"}, good_image)
    assert ans.status_code == 200 and isinstance(ans.json()["answer"], str)
    m = post(url, "/api/match", {"text": "a red circle"}, good_image).json()
    assert 0 <= m["itm_prob"] <= 1 and -1 <= m["itc"] <= 1
    c = post(url, "/api/classify", {"labels": "a red circle, a blue square, a green cross", "rerank": "true"}, good_image).json()
    assert [x["label"] for x in c["labels"]] and all("itm" in x for x in c["labels"])
    s = post(url, "/api/search", {"query": "a red circle", "k": "5", "rerank_k": "4"}).json()["results"]
    assert len(s) == 5 and [h["rank"] for h in s] == [1, 2, 3, 4, 5]
    by_image = post(url, "/api/search", {"k": "3"}, good_image).json()["results"]
    assert by_image[0]["id"].endswith("scene00.png")  # the image itself is its own nearest neighbour
    img = requests.get(url + f"/api/images/{s[0]['row']}", headers=AUTH, timeout=30)
    assert img.status_code == 200 and img.headers["content-type"] == "image/png"
    by_path = post(url, "/api/caption", {"path": "scene00.png"})
    assert by_path.status_code == 200 and by_path.json()["caption"] == cap.json()["caption"]


def test_concurrent_requests_are_batched_and_match_sequential_results(server, heads, world_index):
    url, app, _ = server
    images, _ = world_index
    files = [(images / f"scene{i:02d}.png").read_bytes() for i in range(6)]
    alone = [post(url, "/api/caption", image=f).json()["caption"] for f in files]
    b = app.state.batchers["caption"]
    before = b.batches
    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(lambda f: post(url, "/api/caption", image=f).json()["caption"], files))
    assert together == alone
    assert b.batches - before < 6  # at least two of the six shared a generate call


def test_token_required_and_no_work_without_it(server, good_image):
    url, app, _ = server
    calls = {n: b.items for n, b in app.state.batchers.items()}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": f"Bearer {TOKEN}x"}):
        r = post(url, "/api/caption", image=good_image, headers=headers)
        assert r.status_code == 401 and "token" in r.json()["error"]
        assert requests.get(url + "/api/info", headers=headers, timeout=30).status_code == 401
    for path in ("//api/caption", "/API/caption", "/api/../api/caption", "/docs"):  # no path around the guard
        assert requests.post(url + path, files={"image": ("x.png", good_image)}, timeout=30).status_code == 401
    assert {n: b.items for n, b in app.state.batchers.items()} == calls
    assert requests.get(url + "/", timeout=30).status_code == 200  # the page itself is public; it asks for the token


@pytest.fixture(scope="module")
def bad_inputs(good_image):
    big = io.BytesIO()
    Image.new("L", (7072, 7072)).save(big, format="PNG", compress_level=1)  # 50 megapixels, small file
    return {
        "not an image": ("/api/caption", {}, b"%PDF-1.4 this is not an image", 400),
        "truncated": ("/api/caption", {}, good_image[: len(good_image) // 2], 400),
        "empty file": ("/api/caption", {}, b"", 400),
        "50 megapixels": ("/api/caption", {}, big.getvalue(), 413),
        "too many bytes": ("/api/caption", {}, os.urandom(2 * 2**20), 413),
        "empty question": ("/api/vqa", {"question": "  "}, good_image, 422),
        "10,000-char question": ("/api/vqa", {"question": "why " * 2500}, good_image, 422),
        "no question": ("/api/vqa", {}, good_image, 422),
        "no image": ("/api/caption", {}, None, 422),
        "unknown head": ("/api/segment", {}, good_image, 404),
        "bad k": ("/api/search", {"query": "a red circle", "k": "many"}, None, 422),
        "k out of range": ("/api/search", {"query": "a red circle", "k": "100000"}, None, 422),
        "no labels": ("/api/classify", {"labels": " , "}, good_image, 422),
    }


@pytest.mark.parametrize("case", ["not an image", "truncated", "empty file", "50 megapixels", "too many bytes", "empty question",
                                  "10,000-char question", "no question", "no image", "unknown head", "bad k",
                                  "k out of range", "no labels"])
def test_bad_input_gets_4xx_json_and_the_server_keeps_serving(server, bad_inputs, good_image, case):
    url, _, _ = server
    path, data, image, status = bad_inputs[case]
    r = post(url, path, data, image)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json" and r.json()["error"]
    ok = post(url, "/api/vqa", {"question": "what shape is it?"}, good_image)
    assert ok.status_code == 200 and ok.json()["answer"] is not None


@pytest.mark.parametrize("path", ["../outside/secret.png", "sub/../../secret.png", "/etc/passwd", "link_out.png",
                                  "..\\secret.png", "C:/Windows/win.ini"])
def test_paths_outside_the_image_roots_are_refused(server, good_image, path):
    url, _, outside = server
    if path.startswith("../outside"):
        path = f"../{outside.name}/secret.png"
    r = post(url, "/api/caption", {"path": path})
    assert 400 <= r.status_code < 500 and r.json()["error"]
    assert post(url, "/api/caption", {"path": "scene01.png"}).status_code == 200


def test_demo_run_folders_serve_by_default(tmp_path, spec_of, tiny_tokenizer_dir):
    """`lavislite serve` without model flags loads each stage's newest run of a demo folder (config.yaml + weights)."""
    import shutil

    import yaml

    from lavislite.cli import build_parser
    from lavislite.cli.serve import specs_from_args
    from lavislite.serve.heads import load_heads

    demo = tmp_path / "demo"
    for stage, name in (("caption", "blip_caption"), ("retrieval", "blip_retrieval")):
        run = demo / "runs" / stage / "20260101T000000Z-abc"
        run.mkdir(parents=True)
        shutil.copy(spec_of(name).checkpoint, run / "model_weights.pth")
        vocab = int(spec_of(name).options[0].split("=")[1])
        model = {"arch": name, "model_type": "tiny", "tokenizer": str(tiny_tokenizer_dir), "checkpoint": "/elsewhere/pretrain.pth",
                 "load_finetuned": False, "image_size": 32, "med_overrides": {"vocab_size": vocab}}
        (run / "config.yaml").write_text(yaml.safe_dump({"model": model, "run": {"task": stage}}))
    args = build_parser().parse_args(["serve", "--demo", str(demo)])
    specs = specs_from_args(args)
    assert set(specs) == {"caption", "retrieval"} and specs["caption"].checkpoint.endswith("model_weights.pth")
    heads = load_heads(specs, device="cpu", dtype="fp32")
    assert heads.caption.digest == load_heads({"caption": spec_of("blip_caption")}, device="cpu", dtype="fp32").caption.digest
    assert heads.names() == ["caption", "match", "classify"]
    heads.decode.update(num_beams=1, max_length=6, min_length=2)
    assert isinstance(heads.caption_batch([(Image.new("RGB", (32, 32)), None)])[0], str)


def test_demo_model_folders_serve_and_index_by_folder(tmp_path, loaded, world_index):
    """A run directory holding a model folder (what training writes) serves by default, and `--model FOLDER`
    indexes; the index records the folder and refuses a different model by naming it."""
    from lavislite.cli import build_parser
    from lavislite.cli.serve import specs_from_args
    from lavislite.common.errors import ConfigError
    from lavislite.serve.build import build_index
    from lavislite.serve.heads import load_heads
    from lavislite.serve.identity import ModelSpec, load_spec
    from lavislite.serve.sources import discover_entries

    run = tmp_path / "demo" / "runs" / "retrieval" / "20260102T000000Z-abc"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("run: {}\n")
    loaded("blip_retrieval").model.save_pretrained(run / "model")
    specs = specs_from_args(build_parser().parse_args(["serve", "--demo", str(tmp_path / "demo")]))
    assert set(specs) == {"retrieval"} and specs["retrieval"].folder == str(run / "model")
    heads = load_heads(specs, device="cpu", dtype="fp32")
    assert heads.retrieval.digest == loaded("blip_retrieval").digest  # the same weights, from the folder
    spec = ModelSpec.from_args(str(run))  # a run directory names its model folder
    images, _ = world_index
    entries, _ = discover_entries([str(images)])
    index, _ = build_index(load_spec(spec, "cpu"), entries[:4], str(tmp_path / "idx"), show_progress=False)
    assert index.model["folder"] == str(run / "model")
    with pytest.raises(ConfigError, match=r"made by --model .*/model \(a blip_retrieval model\)"):
        Searcher.open(index, loaded("blip_retrieval", seed=1))
