import json
import subprocess
import sys

HEAVY = ["decord", "cv2", "spacy", "pycocoevalcap", "webdataset", "transformers", "matplotlib"]


def test_import_is_light_and_fast():
    code = (
        "import sys, time, json; import torch; t = time.perf_counter(); import lavislite; "
        "dt = time.perf_counter() - t; "
        f"print(json.dumps({{'dt': dt, 'loaded': [m for m in {HEAVY!r} if m in sys.modules]}}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["loaded"] == [], f"import lavislite pulled in {info['loaded']}"
    assert info["dt"] < 1.0, f"import lavislite took {info['dt']:.3f}s beyond torch"


def test_cli_help_and_models():
    out = subprocess.run([sys.executable, "-m", "lavislite", "--help"], capture_output=True, text=True, check=True)
    assert "models" in out.stdout
    out = subprocess.run([sys.executable, "-m", "lavislite", "models"], capture_output=True, text=True, check=True)
    assert "Architectures" in out.stdout
