from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torchvision.models as tvm
from torch import Tensor, nn
from torch.nn.utils import parametrize

from masking.models import GatedGenerator, PConvUNet
from masking.pruning.compact import compact
from masking.pruning.export import FORMAT_VERSION, export_pruned, load_pruned
from masking.pruning.graph import channel_groups
from tests.oracle import blob_mask


def compacted(model: nn.Module, inputs) -> nn.Module:
    """``model`` with about half of every group's channels removed (seeded)."""
    model.eval()
    g = torch.Generator().manual_seed(0)
    keep = {}
    for group in channel_groups(model, inputs):
        mask = torch.rand(group.size, generator=g) < 0.5
        mask[0] = True
        keep[group.root] = mask
    return compact(model, inputs, keep)


def run(model: nn.Module, inputs: tuple) -> list[Tensor]:
    with torch.no_grad():
        out = model.eval()(*inputs)
    return list(out) if isinstance(out, tuple) else [out]


RESNET = {"_target_": "torchvision.models.resnet18", "weights": None, "num_classes": 10}
UNET = {"_target_": "masking.models.PConvUNet", "layer": "vanilla", "depth": 3, "base_width": 8}
GATED = {"_target_": "masking.models.GatedGenerator", "width": 4}
IMAGE, MASK = torch.rand(1, 3, 32, 32), blob_mask(1, 32, 0.4)
CASES = {
    "resnet18": (RESNET, lambda: tvm.resnet18(weights=None, num_classes=10), (IMAGE,)),
    "pconv_unet": (UNET, lambda: PConvUNet("vanilla", depth=3, base_width=8), (IMAGE, MASK)),
    "gated_generator": (GATED, lambda: GatedGenerator(width=4), (IMAGE, MASK)),
}


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, nn.Module, tuple]:
    builder, make, inputs = CASES["resnet18"]
    model = compacted(make(), inputs)
    directory = export_pruned(model, tmp_path_factory.mktemp("resnet"), builder=builder)
    return directory, model, inputs


@pytest.mark.parametrize("name", list(CASES))
def test_reloaded_model_is_bit_identical(name, tmp_path):
    builder, make, inputs = CASES[name]
    model = compacted(make(), inputs)
    extra = {"val/acc": 0.5, "pruning": {"method": "hard_concrete", "channel_sparsity": 0.5}}

    directory = export_pruned(model, tmp_path / "out", builder=builder, extra=extra)

    assert directory == tmp_path / "out"
    assert sorted(p.name for p in directory.iterdir()) == ["architecture.json", "model.pt"]
    loaded = load_pruned(directory)
    assert type(loaded) is type(model) and not loaded.training
    assert loaded.state_dict().keys() == model.state_dict().keys()
    for expected, actual in zip(run(model, inputs), run(loaded, inputs)):
        assert torch.equal(expected, actual)
    spec = json.loads((directory / "architecture.json").read_text())
    assert spec["builder"] == builder and spec["extra"] == extra


def test_architecture_records_shapes_and_channel_attributes(exported):
    directory, model, _ = exported
    spec = json.loads((directory / "architecture.json").read_text())
    assert spec["format_version"] == FORMAT_VERSION
    conv = spec["modules"]["layer1.0.conv1"]
    assert conv["class"] == "torch.nn.modules.conv.Conv2d"
    assert conv["parameters"]["weight"] == {
        "shape": list(model.layer1[0].conv1.weight.shape),
        "dtype": "float32",
    }
    assert conv["attributes"]["out_channels"] == model.layer1[0].conv1.out_channels < 64
    bn = spec["modules"]["layer1.0.bn1"]
    assert bn["attributes"]["num_features"] == model.layer1[0].bn1.num_features
    assert bn["buffers"]["num_batches_tracked"] == {"shape": [], "dtype": "int64"}
    assert spec["modules"]["fc"]["attributes"]["in_features"] == model.fc.in_features < 512


def test_loads_onto_the_requested_device(exported):
    directory, _, _ = exported
    loaded = load_pruned(directory, map_location=torch.device("cpu"))
    assert {p.device.type for p in loaded.parameters()} == {"cpu"}


def test_export_leaves_no_temporary_files_and_overwrites(exported, tmp_path):
    _, model, _ = exported
    for _ in range(2):
        export_pruned(model, tmp_path, builder=RESNET)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["architecture.json", "model.pt"]


def test_builder_with_positional_and_nested_targets(tmp_path):
    linear = {"_target_": "torch.nn.Linear", "in_features": 4, "out_features": 3}
    builder = {"_target_": "torch.nn.Sequential", "_args_": [linear, {"_target_": "torch.nn.ReLU"}]}
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    loaded = load_pruned(export_pruned(model, tmp_path, builder=builder))
    x = torch.randn(5, 4)
    assert torch.equal(loaded(x), model(x))
    partial = {**linear, "_partial_": True}
    export_pruned(model, tmp_path, builder=partial)
    with pytest.raises(ValueError, match="_partial_: true"):
        load_pruned(tmp_path)


class TestExportErrors:
    def test_builder_without_target(self, tmp_path):
        with pytest.raises(ValueError, match="'_target_'"):
            export_pruned(nn.Linear(2, 2), tmp_path, builder={"in_features": 2})

    def test_not_json_serialisable(self, tmp_path):
        builder = {"_target_": "torch.nn.Linear", "in_features": 2, "out_features": 2}
        with pytest.raises(ValueError, match="JSON-serialisable"):
            export_pruned(nn.Linear(2, 2), tmp_path, builder=builder, extra={"t": torch.ones(1)})
        assert list(tmp_path.iterdir()) == []

    def test_parametrized_model(self, tmp_path):
        net = nn.Linear(2, 2)
        parametrize.register_parametrization(net, "weight", nn.Identity())
        with pytest.raises(ValueError, match="parametrizations; bake them"):
            export_pruned(net, tmp_path, builder={"_target_": "torch.nn.Linear"})


class TestLoadErrors:
    @pytest.fixture
    def copy(self, exported, tmp_path) -> Path:
        directory = tmp_path / "copy"
        directory.mkdir()
        for name in ("architecture.json", "model.pt"):
            (directory / name).write_bytes((exported[0] / name).read_bytes())
        return directory

    def edit_spec(self, directory: Path, **changes) -> None:
        path = directory / "architecture.json"
        spec = json.loads(path.read_text())
        spec.update(changes)
        path.write_text(json.dumps(spec))

    def test_missing_directory(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="not a directory"):
            load_pruned(tmp_path / "nowhere")

    @pytest.mark.parametrize("name", ["architecture.json", "model.pt"])
    def test_missing_file(self, copy, name):
        (copy / name).unlink()
        with pytest.raises(FileNotFoundError, match=f"{name} is missing"):
            load_pruned(copy)

    def test_truncated_weights(self, copy):
        data = (copy / "model.pt").read_bytes()
        (copy / "model.pt").write_bytes(data[: len(data) // 2])
        with pytest.raises(ValueError, match=r"model\.pt .* does not match architecture\.json"):
            load_pruned(copy)

    def test_corrupted_json(self, copy):
        (copy / "architecture.json").write_text('{"format_version": 1, "modu')
        with pytest.raises(ValueError, match=r"architecture\.json is not valid JSON"):
            load_pruned(copy)

    def test_unknown_format_version(self, copy):
        self.edit_spec(copy, format_version=99)
        with pytest.raises(ValueError, match=r"format_version 99; .* reads 1"):
            load_pruned(copy)

    def test_builder_that_cannot_be_imported(self, copy):
        self.edit_spec(copy, builder={"_target_": "torchvision.models.resnet99"})
        with pytest.raises(
            ImportError, match=r"'torchvision\.models\.resnet99' cannot be imported"
        ):
            load_pruned(copy)

    def test_builder_of_another_architecture_names_the_key(self, copy):
        self.edit_spec(copy, builder={**RESNET, "_target_": "torchvision.models.resnet34"})
        with pytest.raises(ValueError, match=r"model.pt lacks 'layer1\.2\.conv1\.weight'"):
            load_pruned(copy)

    def test_recorded_module_the_builder_lacks(self, copy):
        self.edit_spec(
            copy, builder={"_target_": "torch.nn.Linear", "in_features": 2, "out_features": 2}
        )
        with pytest.raises(
            ValueError, match="records module 'conv1', which the builder's model lacks"
        ):
            load_pruned(copy)
