from pathlib import Path

from lavislite.api import model_zoo

DOC = Path(__file__).resolve().parents[2] / "docs" / "models.md"


def test_models_doc_zoo_table_matches_registry():
    text = DOC.read_text()
    table = text.split("<!-- zoo:start -->\n", 1)[1].split("\n<!-- zoo:end -->", 1)[0]
    assert table == model_zoo.markdown(builtin_only=True), "docs/models.md is stale: regenerate with `lavislite models --markdown`"


def test_every_blip_head_is_registered_with_its_types():
    types = {(e.name, e.model_type) for e in model_zoo}
    expected = {
        ("blip_caption", "base_coco"), ("blip_caption", "large_coco"),
        ("blip_feature_extractor", "base"),
        ("blip_image_text_matching", "base"), ("blip_image_text_matching", "large"),
        ("blip_retrieval", "coco"), ("blip_retrieval", "flickr"),
        ("blip_vqa", "vqav2"), ("blip_vqa", "okvqa"), ("blip_vqa", "aokvqa"),
        ("blip_nlvr", "nlvr"),
        ("blip_pretrain", "base"), ("blip_pretrain", "base_14m"), ("blip_pretrain", "base_129m"),
        ("blip_pretrain", "capfilt_large"), ("blip_pretrain", "large"),
    }
    assert expected <= types
