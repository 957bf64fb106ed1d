import pytest

from lavislite.common.errors import RegistryError
from lavislite.common.registry import Registry, registry


def test_register_and_get():
    reg = Registry("widget")

    @reg.register("a")
    class A:
        pass

    assert reg.get("a") is A
    assert reg.names() == ["a"]
    assert "a" in reg and "b" not in reg


def test_duplicate_name_raises_unless_forced():
    reg = Registry("widget")
    reg.register("a", object)
    with pytest.raises(RegistryError, match="already taken"):
        reg.register("a", int)
    reg.register("a", int, force=True)
    assert reg.get("a") is int


def test_failed_lookup_lists_names_and_closest_match():
    reg = Registry("widget")
    reg.register("captioning", object)
    reg.register("retrieval", object)
    with pytest.raises(KeyError) as info:
        reg.get("captoning")
    msg = str(info.value)
    assert "widget registry" in msg
    assert "captioning, retrieval" in msg
    assert "Did you mean 'captioning'" in msg


def test_bad_name_rejected():
    with pytest.raises(RegistryError):
        Registry("widget").register("", object)


def test_facade_has_every_kind():
    for kind in ("model", "processor", "builder", "task", "runner", "lr_scheduler", "vision_encoder", "tokenizer", "checkpoint_converter"):
        assert callable(getattr(registry, f"register_{kind}"))
        assert callable(getattr(registry, f"list_{kind}s"))


def test_import_modules_error_names_module():
    with pytest.raises(RegistryError, match="no_such_module_xyz"):
        registry.import_modules(["no_such_module_xyz"])
