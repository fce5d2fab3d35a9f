"""task=export: pruning runs and inpainting checkpoints become checked ONNX / torch.export files;
the pruning report times both models in onnxruntime; the user's files are never replaced unasked;
bad input is one error line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from masking.functional import fill_holes
from masking.models import PConvUNet
from masking.pruning import load_example_inputs, load_pruned
from tasks import run
from tasks.jobs.export import inpainting_inputs
from tasks.runtime.exporting import onnx_session
from tests.helpers.jobs import prune_fast, prune_inpaint_fast, read_json
from tests.helpers.models import SMALL_UNET, inpaint_checkpoint
from tests.hydra_config import compose_config, error_line, run_cli


@pytest.fixture(scope="module")
def inpaint_ckpt(tmp_path_factory):
    return inpaint_checkpoint(tmp_path_factory.mktemp("ckpt") / "last.ckpt")


def test_a_pruning_run_times_onnxruntime_and_exports_on_its_own_inputs(tmp_path):
    overrides = [
        *prune_fast(tmp_path),
        "pruning=slimming",
        "pruning.sparsity=0.5",
        "task.latency.onnxruntime=true",
    ]
    run(compose_config(tmp_path / "prune", overrides))
    report = read_json(tmp_path / "prune" / "prune_report.json")
    onnx = report["onnxruntime"]
    assert set(onnx) == {"dense", "final", "speedup"}, onnx
    assert set(onnx["final"]) == {"batch_1", "batch_4"}
    assert onnx["speedup"]["batch_4"] == onnx["dense"]["batch_4"] / onnx["final"]["batch_4"]
    assert "onnxruntime" in (tmp_path / "prune" / "prune_report.md").read_text()
    metrics = read_json(tmp_path / "prune" / "metrics.json")
    assert metrics["final/onnx_speedup_batch_4"] == onnx["speedup"]["batch_4"]

    export = tmp_path / "prune" / "export"
    (inputs,) = load_example_inputs(export)  # the validation digits the compaction was checked on
    assert inputs.shape == (8, 3, 16, 16)
    run(compose_config(tmp_path / "onnx", ["task=export", f"ckpt_path={export}"]))
    record = read_json(tmp_path / "onnx" / "export.json")
    assert [c["shapes"] for c in record["checks"]] == [[[1, 3, 16, 16]], [[2, 3, 20, 20]]]
    model = load_pruned(export)
    session = onnx_session(tmp_path / "onnx" / "model.onnx")
    got = session.run(None, {"input": inputs.numpy()})[0]
    with torch.no_grad():
        want = model(inputs).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())

    run(
        compose_config(
            tmp_path / "pt2", ["task=export", f"ckpt_path={export}", "format=torch_export"]
        )
    )
    program = torch.export.load(str(tmp_path / "pt2" / "model.pt2")).module()
    with torch.no_grad():
        torch.testing.assert_close(program(inputs), model(inputs), rtol=1e-4, atol=1e-5)


def test_a_compacted_partial_conv_unet_is_timed_and_exported_as_plain_onnx(tmp_path):
    overrides = prune_inpaint_fast(
        tmp_path,
        "net.multi_channel_decoder=false",
        "pruning=magnitude",
        "pruning.granularity=channel",
        "pruning.sparsity=0.5",
        "task.latency.onnxruntime=true",
    )
    run(compose_config(tmp_path / "prune", overrides))
    report = read_json(tmp_path / "prune" / "prune_report.json")
    assert report["finalize"] == "compact"
    assert set(report["onnxruntime"]) == {"dense", "final", "speedup"}, report["onnxruntime"]
    export = tmp_path / "prune" / "export"
    images, masks = load_example_inputs(export)  # validation crops and their masks
    run(compose_config(tmp_path / "onnx", ["task=export", f"ckpt_path={export}"]))
    record = read_json(tmp_path / "onnx" / "export.json")
    # the example inputs: validation images (data.val_size=64), then a larger batch and size
    assert [c["shapes"][0] for c in record["checks"]] == [[1, 3, 64, 64], [2, 3, 80, 80]]
    session = onnx_session(tmp_path / "onnx" / "model.onnx")
    # the default U-Net refines fill_holes' fill: the file takes the filled image
    filled = fill_holes(images, masks).numpy()
    (got,) = session.run(None, {"filled": filled, "mask": masks.numpy()})
    with torch.no_grad():
        want = load_pruned(export)(images, masks).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_an_inpainting_checkpoint_exports_and_an_existing_file_is_kept(tmp_path, inpaint_ckpt):
    out = tmp_path / "deploy" / "unet.onnx"
    common = ["task=export", f"ckpt_path={inpaint_ckpt}", f"output={out}"]
    result = run_cli(*common, f"hydra.run.dir={tmp_path / 'a'}")
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((tmp_path / "a" / "export.json").read_text())
    assert record["kind"] == "inpainting network" and out.stat().st_size == record["bytes"]
    assert all(c["of_allowed"] <= 1 for c in record["checks"])
    assert set(record["latency_ms"]["pytorch"]) == {"batch_1"}
    before = out.read_bytes()
    line = error_line(run_cli(*common, f"hydra.run.dir={tmp_path / 'b'}"))
    assert f"output '{out}' exists: choose another name (overwrite=true replaces it)" in line
    assert out.read_bytes() == before
    result = run_cli(*common, "overwrite=true", f"hydra.run.dir={tmp_path / 'c'}")
    assert result.returncode == 0, result.stderr[-2000:]


def test_a_network_that_refines_a_fill_exports_its_refining_part(tmp_path):
    # the default inpainting network fills holes ring by ring (no ONNX form at every size) and
    # refines the fill: the file takes the filled image, and with the fill gives forward's output
    spec = {**SMALL_UNET, "prefill": True}
    net = PConvUNet(**{k: v for k, v in spec.items() if k != "_target_"})
    with torch.no_grad():  # a trained refiner's last layer is not zero: let the check see it
        net.decoder[-1].conv.weight.normal_(0, 0.1)
    ckpt = tmp_path / "prefill.ckpt"
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    torch.save({"net_spec": spec, "state_dict": state}, ckpt)
    out = tmp_path / "refiner.onnx"
    run(compose_config(tmp_path / "run", ["task=export", f"ckpt_path={ckpt}", f"output={out}"]))
    record = read_json(tmp_path / "run" / "export.json")
    assert record["kind"].startswith("inpainting network (its refining part")
    session = onnx_session(out)
    assert [i.name for i in session.get_inputs()] == ["filled", "mask"]
    images, masks = inpainting_inputs(batch=2, size=64)
    filled = fill_holes(images, masks)
    got = session.run(None, {"filled": filled.numpy(), "mask": masks.numpy()})[0]
    with torch.no_grad():
        want = net.eval()(images, masks)
    assert not torch.allclose(want, filled, atol=1e-3)  # the correction is there to compare
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-5 * want.abs().max().item())


@pytest.mark.parametrize(
    ("overrides", "text"),
    [
        (["format=tflite"], "format must be one of onnx, torch_export, got 'tflite'"),
        ([], "ckpt_path is required for task=export"),
        (["ckpt_path={tmp}"], "is a folder without architecture.json: give the export/ folder"),
        (["ckpt_path={tmp}/nothing.ckpt"], "nothing.ckpt' is not a file"),
        (["ckpt_path={ckpt}", "output={tmp}"], "is a folder; name the file to write"),
    ],
    ids=["format", "no ckpt_path", "folder", "missing file", "output folder"],
)
def test_bad_export_input_is_one_line(tmp_path, inpaint_ckpt, overrides, text):
    overrides = [o.format(tmp=tmp_path, ckpt=inpaint_ckpt) for o in overrides]
    result = run_cli("task=export", *overrides, f"hydra.run.dir={tmp_path / 'run'}")
    assert text in error_line(result)
