"""Packaging for lavislite. Dependencies carry lower bounds only: no upper pin has been forced
by a measured break (LAVIS's pins were its users' most common complaint)."""

from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
SERVE = ["faiss-cpu>=1.7.4", "fastapi>=0.100", "uvicorn>=0.23", "python-multipart>=0.0.9"]

setup(
    name="lavislite",
    version="0.1.0",
    description="The BLIP family of vision-language models: registries, faithful checkpoints, fast inference, yaml-driven training.",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8") if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["lavislite", "lavislite.*"]),
    include_package_data=True,
    package_data={"lavislite": ["configs/**/*.yaml", "configs/**/*.json", "serve/*.html"]},
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "timm>=0.9",
        "transformers>=4.40",
        "tokenizers>=0.15",
        "omegaconf>=2.3",
        "iopath>=0.1.10",
        "decord>=0.6; platform_machine == 'x86_64'",
        "opencv-python-headless>=4.8",
        "pycocoevalcap>=1.2",
        "spacy>=3.5",
        "webdataset>=0.2",
        "safetensors>=0.4",
        "huggingface_hub>=0.20",
        "pyyaml>=6",
        "tqdm>=4.60",
        "pillow>=9",
        "numpy>=1.23",
        "matplotlib>=3.6",
    ],
    # `lavislite index/search/serve`: faiss for the vector index, FastAPI + uvicorn for the HTTP service;
    # imported only by those commands. The tests drive the web page with Selenium (and Debian's chromium).
    extras_require={
        "serve": SERVE,
        "test": ["pytest>=7", "hypothesis>=6", "ruff>=0.5", "requests>=2.28", "selenium>=4.10", *SERVE],
    },
    entry_points={"console_scripts": ["lavislite=lavislite.cli:main"]},
)
