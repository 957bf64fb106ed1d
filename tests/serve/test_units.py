"""Small pieces of the service: the dynamic batcher, dtype choice, path confinement, image decoding limits."""

import io
import os
import time

import pytest
import torch
from PIL import Image

from lavislite.serve.batching import DynamicBatcher
from lavislite.serve.identity import pick_dtype
from lavislite.serve.images import Limits, RequestError, decode_image, resolve_in_roots


def test_batcher_groups_concurrent_items_and_keeps_order():
    seen = []
    b = DynamicBatcher(lambda items: (seen.append(list(items)), [x * 10 for x in items])[1], max_batch=4, max_wait_ms=300)
    futs = [b.submit(i) for i in range(6)]
    assert [f.result(timeout=10) for f in futs] == [0, 10, 20, 30, 40, 50]
    assert seen == [[0, 1, 2, 3], [4, 5]] and (b.batches, b.items) == (2, 6)
    b.close()


def test_batcher_lone_request_waits_at_most_max_wait_and_errors_reach_every_caller():
    def fn(items):
        if "bad" in items:
            raise ValueError("bad item")
        return items

    b = DynamicBatcher(fn, max_batch=8, max_wait_ms=50)
    t0 = time.monotonic()
    assert b.submit("x").result(timeout=10) == "x"
    assert time.monotonic() - t0 < 5
    futs = [b.submit("a"), b.submit("bad")]
    for f in futs:
        with pytest.raises(ValueError, match="bad item"):
            f.result(timeout=10)
    assert b.submit("y").result(timeout=10) == "y"  # the worker thread survives
    b.close()


def test_no_batching_runs_one_at_a_time():
    b = DynamicBatcher(lambda items: [len(items)] * len(items), max_batch=1, max_wait_ms=100)
    futs = [b.submit(i) for i in range(3)]
    assert [f.result(timeout=10) for f in futs] == [1, 1, 1]
    b.close()


def test_auto_dtype_is_bf16_only_where_it_pays():
    tiny = torch.nn.Linear(4, 4)
    big = torch.nn.Linear(8000, 7000, device="meta")  # 56M parameters, no memory
    assert pick_dtype("auto", tiny, torch.device("cpu")) == torch.float32
    assert pick_dtype("auto", big, torch.device("cpu")) == torch.bfloat16
    assert pick_dtype("auto", tiny, torch.device("cuda")) == torch.bfloat16
    assert pick_dtype("fp32", big, torch.device("cpu")) == torch.float32


def test_paths_are_confined_to_the_roots(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "sub" / "a.png").write_bytes(b"x")
    (outside / "s.png").write_bytes(b"x")
    os.symlink(outside, root / "door")  # a directory link out of the root
    os.symlink(root / "sub" / "a.png", root / "inside.png")  # a link that stays inside is fine
    assert resolve_in_roots("sub/a.png", [root]) == (root / "sub" / "a.png").resolve()
    assert resolve_in_roots("inside.png", [root]) == (root / "sub" / "a.png").resolve()
    for bad, status in (("../outside/s.png", 403), (str(outside / "s.png"), 403), ("door/s.png", 403),
                        ("sub/../../outside/s.png", 403), ("missing.png", 404), ("", 400), ("sub", 400)):
        with pytest.raises(RequestError) as err:
            resolve_in_roots(bad, [root])
        assert err.value.status == status, bad
    with pytest.raises(RequestError, match="--image-root"):
        resolve_in_roots("sub/a.png", [])


def test_pixel_limit_is_checked_before_decoding():
    buf = io.BytesIO()
    Image.new("RGB", (3000, 2000)).save(buf, format="PNG")
    with pytest.raises(RequestError) as err:
        decode_image(buf.getvalue(), "big.png", Limits(max_pixels=5_000_000))
    assert err.value.status == 413 and "6.0 megapixels" in err.value.message
    assert decode_image(buf.getvalue(), "big.png", Limits(max_pixels=6_000_000)).size == (3000, 2000)
