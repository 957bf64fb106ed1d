"""Every task end to end from a project yaml: tiny BLIP heads on tiny generated data (32 px images in the
real annotation formats), a few training steps, evaluation, the metrics JSON; and each training step
overfits one batch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lavislite.common.config import build_run_config
from lavislite.models.tokenizer import init_tokenizer
from lavislite.tasks import setup_task
from lavislite.train import run
from tests.helpers.tasks import tokenizer_dir, write_karpathy, write_nlvr, write_vqa

RUN = {
    "output_dir": None, "device": "cpu", "num_workers": 0, "batch_size_train": 4, "batch_size_eval": 4,
    "max_epoch": 1, "init_lr": 1.0e-4, "log_freq": 1, "min_free_space_mb": 1, "seed": 0,
}


@pytest.fixture(scope="module")
def vocab(tmp_path_factory) -> tuple[Path, int]:
    d = tokenizer_dir(tmp_path_factory.mktemp("vocab"))
    return d, len(init_tokenizer(d))


def _ann(paths: dict[str, Path], splits: dict[str, str]) -> dict:
    return {s: {"url": None, "path": str(paths[k])} for s, k in splits.items()}


def project(tmp_path: Path, vocab, arch: str, dataset: dict, run: dict, model: dict | None = None) -> Path:
    vocab_dir, n = vocab
    cfg = {
        "model": {"arch": arch, "model_type": "tiny", "tokenizer": str(vocab_dir), "med_overrides": {"vocab_size": n}, **(model or {})},
        "datasets": dataset,
        "run": {**RUN, "output_dir": str(tmp_path / "out"), **run},
    }
    path = tmp_path / "project.yaml"
    path.write_text(json.dumps(cfg))  # JSON is yaml
    return path


def check_run(summary: dict, split: str, keys: set[str]) -> dict:
    run_dir = Path(summary["run_dir"])
    data = json.loads((run_dir / f"{split}_metrics.json").read_text())
    assert keys <= set(data["metrics"]), f"{split} metrics {sorted(data['metrics'])} lack {keys - set(data['metrics'])}"
    return data["metrics"]


def overfit(path: Path, steps: int = 12, lr: float = 1e-3, options=(), indices=(0, 1, 2, 3)) -> tuple[float, float]:
    """``task.train_step`` on one fixed batch: the loss must fall."""
    cfg = build_run_config(path, list(options))
    torch.manual_seed(0)
    task = setup_task(cfg)
    model = task.build_model(cfg).train()
    train = task.build_datasets(cfg)
    ds = next(s["train"] for s in train.values() if "train" in s)
    batch = ds.collater([ds[i] for i in indices])
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        loss = task.train_step(model, batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses[0], min(losses[-3:])


# -- captioning --------------------------------------------------------------------------------------
def caption_project(tmp_path, vocab, **run):
    paths = write_karpathy(tmp_path / "coco")
    ann = _ann(paths, {"train": "train", "val": "val", "test": "test", "val_gt": "val_gt", "test_gt": "test_gt"})
    ds = {
        "coco_caption": {
            "build_info": {"annotations": ann, "images": {"storage": str(tmp_path / "coco")}},
            "vis_processor": {"train": {"name": "blip_image_train", "image_size": 32}, "eval": {"name": "blip_image_eval", "image_size": 32}},
        }
    }
    r = {"task": "captioning", "num_beams": 2, "max_len": 10, "min_len": 5, "spice": False, "valid_splits": ["val"], "test_splits": ["test"], **run}
    return project(tmp_path, vocab, "blip_caption", ds, r)


@pytest.mark.slow  # METEOR's Java start-up costs ~25 s per split
def test_captioning_end_to_end_with_metrics(tmp_path, vocab):
    summary = run(str(caption_project(tmp_path, vocab)))
    m = check_run(summary, "val", {"Bleu_4", "CIDEr", "METEOR", "ROUGE_L", "agg_metrics"})
    assert m["agg_metrics"] == pytest.approx(m["CIDEr"] + m["Bleu_4"])
    check_run(summary, "test", {"agg_metrics"})
    caps = json.loads((Path(summary["run_dir"]) / "test_captions.json").read_text())
    assert len(caps) == 4 and all(set(c) == {"image_id", "caption"} and isinstance(c["image_id"], int) for c in caps)
    assert summary["steps"] == 4  # 16 train captions / batch 4


def test_captioning_train_and_results_only(tmp_path, vocab):
    """NoCaps style (report_metric false): captions written, no references needed."""
    summary = run(str(caption_project(tmp_path, vocab, report_metric=False, valid_splits=[])))
    assert summary["steps"] == 4
    assert check_run(summary, "test", {"num_captions"}) == {"num_captions": 4}
    caps = json.loads((Path(summary["run_dir"]) / "test_captions.json").read_text())
    assert sorted(c["image_id"] for c in caps) == [1000, 1001, 1002, 1003]


def test_captioning_scores_against_gt_file(tmp_path, vocab, monkeypatch):
    """The task hands coco_caption_scores the dataset's references keyed like the results (the metric
    itself is tested in tests/metrics; METEOR's Java start-up is too slow for a default test)."""
    import lavislite.metrics

    seen = {}

    def fake_scores(gts, res, spice=True):
        seen.update(gts=gts, res=res, spice=spice)
        return {"Bleu_4": 0.25, "CIDEr": 1.5, "SPICE": None, "spice_unavailable": "disabled"}

    monkeypatch.setattr(lavislite.metrics, "coco_caption_scores", fake_scores)
    summary = run(str(caption_project(tmp_path, vocab, valid_splits=[])), evaluate=True)
    m = check_run(summary, "test", {"agg_metrics", "CIDEr", "Bleu_4", "SPICE"})
    assert m["agg_metrics"] == pytest.approx(1.75) and m["SPICE"] is None
    assert seen["spice"] is False and set(seen["res"]) == {1000, 1001, 1002, 1003}
    assert seen["gts"][1000] == ["a red square", "a picture of a red square"]


def test_captioning_overfits(tmp_path, vocab):
    first, last = overfit(caption_project(tmp_path, vocab), steps=15, lr=3e-3)
    assert last < 0.6 * first


# -- retrieval ---------------------------------------------------------------------------------------
RET_KEYS = {"txt_r1", "txt_r5", "txt_r10", "img_r1", "img_r5", "img_r10", "r_mean", "agg_metrics"}


def retrieval_project(tmp_path, vocab, **run):
    paths = write_karpathy(tmp_path / "coco")
    ds = {
        "coco_retrieval": {
            "build_info": {
                "annotations": _ann(paths, {"train": "train", "val": "val", "test": "test"}),
                "images": {"storage": str(tmp_path / "coco")},
            },
            "vis_processor": {"train": {"name": "blip_image_train", "image_size": 32}, "eval": {"name": "blip_image_eval", "image_size": 32}},
        }
    }
    r = {"task": "retrieval", "k_test": 3, "itm_pairs_per_batch": 6, "save_scores": True, "valid_splits": ["val"], "test_splits": ["test"], **run}
    return project(tmp_path, vocab, "blip_retrieval", ds, r, model={"queue_size": 8})


def test_retrieval_end_to_end(tmp_path, vocab):
    summary = run(str(retrieval_project(tmp_path, vocab)))
    m = check_run(summary, "val", RET_KEYS)
    assert m["agg_metrics"] == m["r_mean"] and 0 <= m["r_mean"] <= 100
    check_run(summary, "test", RET_KEYS)
    scores = __import__("numpy").load(Path(summary["run_dir"]) / "test_scores.npz")
    assert scores["i2t"].shape == (4, 8) and scores["t2i"].shape == (8, 4)
    assert ((scores["i2t"] > -100).sum(1) == 3).all() and ((scores["t2i"] > -100).sum(1) == 3).all()


# Contrastive heads: with momentum 0.995 the queue holds stale copies of the batch, so a fixed batch is
# overfitted with the momentum encoder following the model (momentum 0), no distillation and 4 images.
CONTRASTIVE = ("model.momentum=0.0", "model.alpha=0.0")


@pytest.mark.slow  # ~35 s on 2 busy cores (momentum encoder + queue)
def test_retrieval_overfits(tmp_path, vocab):
    first, last = overfit(retrieval_project(tmp_path, vocab), steps=15, options=CONTRASTIVE, indices=(0, 2, 4, 6))
    assert last < 0.85 * first  # ITC is bounded below by the queued copies of the positives


# -- VQA ---------------------------------------------------------------------------------------------
def vqa_project(tmp_path, vocab, **run):
    paths = write_vqa(tmp_path / "vqa")
    ds = {
        "coco_vqa": {
            "build_info": {
                "annotations": _ann(paths, {"train": "train", "val": "val", "test": "val"}),
                "answer_list": {"url": None, "path": str(paths["answer_list"])},
                "images": {"storage": str(tmp_path / "vqa")},
            },
            "vis_processor": {"train": {"name": "blip_image_train", "image_size": 32}, "eval": {"name": "blip_image_eval", "image_size": 32}},
        }
    }
    r = {"task": "vqa", "num_ans_candidates": 3, "valid_splits": ["val"], **run}
    return project(tmp_path, vocab, "blip_vqa", ds, r)


def test_vqa_end_to_end(tmp_path, vocab):
    summary = run(str(vqa_project(tmp_path, vocab)))
    m = check_run(summary, "val", {"agg_metrics", "overall"})
    assert 0 <= m["overall"] <= 100
    sub = json.loads((Path(summary["run_dir"]) / "val_vqa_result.json").read_text())
    assert len(sub) == 8 and all(set(r) == {"question_id", "answer"} for r in sub)
    answers = set(json.loads((tmp_path / "vqa" / "answer_list.json").read_text()))
    assert {r["answer"] for r in sub} <= answers  # rank mode picks from the list


def test_vqa_generate_mode(tmp_path, vocab):
    summary = run(str(vqa_project(tmp_path, vocab, inference_method="generate", max_len=4)), evaluate=True)
    check_run(summary, "val", {"agg_metrics", "overall"})


def test_vqa_overfits(tmp_path, vocab):
    first, last = overfit(vqa_project(tmp_path, vocab), steps=15, lr=3e-3)
    assert last < 0.7 * first


# -- NLVR2 -------------------------------------------------------------------------------------------
def nlvr_project(tmp_path, vocab, **run):
    paths = write_nlvr(tmp_path / "nlvr")
    ds = {
        "nlvr": {
            "build_info": {
                "annotations": _ann(paths, {"train": "train", "val": "dev", "test": "dev"}),
                "images": {"storage": str(tmp_path / "nlvr")},
            },
            "vis_processor": {"train": {"name": "blip_image_train", "image_size": 32}, "eval": {"name": "blip_image_eval", "image_size": 32}},
        }
    }
    r = {"task": "multimodal_classification", "valid_splits": ["val"], "test_splits": ["test"], **run}
    return project(tmp_path, vocab, "blip_nlvr", ds, r)


def test_nlvr_end_to_end(tmp_path, vocab):
    summary = run(str(nlvr_project(tmp_path, vocab)))
    m = check_run(summary, "val", {"agg_metrics", "acc"})
    preds = json.loads((Path(summary["run_dir"]) / "val_predictions.json").read_text())
    assert len(preds) == 8
    assert m["acc"] == pytest.approx(100 * sum(p["prediction"] == p["target"] for p in preds) / 8)


def test_nlvr_overfits(tmp_path, vocab):
    # two-class cross-entropy starts near ln 2; 24 steps on one batch take it well below
    first, last = overfit(nlvr_project(tmp_path, vocab), steps=24, lr=3e-3)
    assert last < 0.6 * first


# -- pre-training -------------------------------------------------------------------------------------
def pretrain_project(tmp_path, vocab, **run):
    paths = write_karpathy(tmp_path / "coco")
    pre = [{"image": r["image"], "caption": r["caption"]} for r in json.loads(paths["train"].read_text())]
    (tmp_path / "coco" / "pretrain.json").write_text(json.dumps(pre))
    vis = {"train": {"name": "blip_image_train", "image_size": 32}, "eval": {"name": "blip_image_eval", "image_size": 32}}
    ds = {
        "pretrain_json": {
            "build_info": {
                "annotations": {"train": {"url": None, "path": str(tmp_path / "coco" / "pretrain.json")}},
                "images": {"storage": str(tmp_path / "coco")},
            },
            "vis_processor": vis,
        },
        "coco_retrieval": {
            "build_info": {
                "annotations": {"train": {"url": None, "path": None}, **_ann(paths, {"val": "val", "test": "test"})},
                "images": {"storage": str(tmp_path / "coco")},
            },
            "vis_processor": vis,
        },
    }
    r = {"task": "image_text_pretrain", "k_test": 3, "valid_splits": ["val"], **run}
    return project(tmp_path, vocab, "blip_pretrain", ds, r, model={"queue_size": 8})


def test_pretrain_end_to_end_with_zero_shot_retrieval(tmp_path, vocab):
    summary = run(str(pretrain_project(tmp_path, vocab)))
    check_run(summary, "val", RET_KEYS)
    assert {"loss", "loss_itc", "loss_itm", "loss_lm"} <= set(summary["train"])


@pytest.mark.slow  # ~40 s on 2 busy cores (ITC + ITM + LM, momentum encoders)
def test_pretrain_overfits(tmp_path, vocab):
    first, last = overfit(pretrain_project(tmp_path, vocab), steps=15, options=CONTRASTIVE, indices=(0, 2, 4, 6))
    assert last < 0.7 * first
