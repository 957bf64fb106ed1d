"""Videos and images generated for the processor tests (OpenCV, mp4v, tiny)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

# background colour of frame i cycles red, green, blue (given here in RGB)
BACKGROUNDS_RGB = [(220, 20, 20), (20, 220, 20), (20, 20, 220)]
FPS = 10


def write_video(path: Path, n_frames: int, width: int = 64, height: int = 64) -> Path:
    """Solid background cycling red/green/blue plus a white square and a yellow disc that move."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (width, height))
    assert writer.isOpened(), "OpenCV cannot write mp4v here"
    for i in range(n_frames):
        rgb = np.empty((height, width, 3), np.uint8)
        rgb[:] = BACKGROUNDS_RGB[i % 3]
        x = (3 * i) % (width - 16)
        rgb[8:24, x : x + 16] = 255
        cv2.circle(rgb, (width - 12, (4 * i) % height), 8, (240, 240, 0), -1)
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


@pytest.fixture(scope="session")
def videos(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("videos")
    out = {
        "clip": write_video(root / "clip.mp4", 20),
        "short": write_video(root / "short.mp4", 3),
        "wide": write_video(root / "wide.mp4", 12, width=96, height=48),
    }
    import cv2

    header_only = cv2.VideoWriter(str(root / "zero_frames.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (64, 64))
    header_only.release()  # a container with no frames
    out["zero_frames"] = root / "zero_frames.mp4"
    (root / "empty.mp4").write_bytes(b"")
    out["empty"] = root / "empty.mp4"
    (root / "corrupt.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    out["corrupt"] = root / "corrupt.mp4"
    out["missing"] = root / "no_such_video.mp4"
    return out
