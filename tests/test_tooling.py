"""The project's own tooling: lint is clean and the benchmark script still produces its report."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(
    shutil.which("ruff") is None and not (Path(sys.executable).parent / "ruff").exists(),
    reason="ruff is not installed (pip install -e '.[dev]')",
)
@pytest.mark.parametrize(
    "args", [["check", "."], ["format", "--check", "."]], ids=["lint", "format"]
)
def test_ruff_is_clean(args):
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    result = subprocess.run([ruff, *args], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def run_script(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run a script of the repository with this interpreter, from the repository root."""
    return subprocess.run(
        [sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def test_partial_conv_benchmark_writes_its_report(tmp_path):
    out = tmp_path / "pc"
    result = run_script(
        "benchmarks/bench_partial_conv.py", "--rounds", "1", "--shapes", "8x16", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr[-2000:]
    payload = json.loads(out.with_suffix(".json").read_text())
    for key in ("commit", "versions", "device", "allocator", "results", "ratios", "acceptance"):
        assert key in payload
    assert payload["versions"]["torch"]
    impls = {r["impl"] for r in payload["results"]}
    assert impls == {"conv", "ours", "ours_multi", "dense"}
    assert all(r["median_ms"] > 0 for r in payload["results"])
    assert "| 8, 16² | 35% | forward |" in out.with_suffix(".md").read_text()


def test_partial_conv_breakdown_writes_its_report(tmp_path):
    out = tmp_path / "pb"
    args = ["--rounds", "1", "--channels", "4", "--size", "8", "--out", str(out)]
    result = run_script("benchmarks/bench_pconv_breakdown.py", *args)
    assert result.returncode == 0, result.stderr[-2000:]
    payload = json.loads(out.with_suffix(".json").read_text())
    stages = [r["stage"] for r in payload["results"]]
    assert stages == ["conv", "+product", "+ratio", "+rescale", "+bias", "op", "module"]
    assert all(r["median_ms"] > 0 for r in payload["results"])
    assert payload["results"][0]["vs_conv"] == 1.0
    assert "| +bias |" in out.with_suffix(".md").read_text()
    bad = run_script("benchmarks/bench_pconv_breakdown.py", "--holes", "1.5", "--out", str(out))
    assert bad.returncode != 0 and "--holes must lie in [0, 1)" in bad.stderr


def test_attention_widths_benchmark_times_every_stage_of_every_width(tmp_path):
    out = tmp_path / "aw"
    args = ["--rounds", "1", "--batch", "2", "--tokens", "5", "--embed", "16", "--heads", "2"]
    result = run_script(
        "benchmarks/bench_attention_widths.py", *args, "--widths", "8:8", "3:5", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr[-2000:]
    payload = json.loads(out.with_suffix(".json").read_text())
    rows = payload["results"]
    assert [(r["q"], r["v"]) for r in rows] == [(8, 8), (3, 5)]
    # 5 tokens · 16 wide · 2 heads · (2q + v), the core 5² · 2 · (q + v), out 5 · 2 · v · 16; ×2
    assert rows[1]["macs"] == {"in": 3520, "core": 800, "out": 1600, "module": 5920}
    assert rows[0]["mac_reduction"] == 1.0 and rows[1]["mac_reduction"] == 11840 / 5920
    assert all(t > 0 for r in rows for t in r["median_ms"].values())
    assert "| 3:5 |" in out.with_suffix(".md").read_text()
    bad = run_script("benchmarks/bench_attention_widths.py", "--widths", "8", "--out", str(out))
    assert bad.returncode != 0 and "expected q:v with two ints, got '8'" in bad.stderr


def test_mask_product_benchmark_writes_its_report(tmp_path):
    out = tmp_path / "mp"
    result = run_script(
        "benchmarks/bench_mask_product.py", "--rounds", "1", "--scale", "64", "--out", str(out)
    )
    assert result.returncode == 0, result.stderr[-2000:]
    payload = json.loads(out.with_suffix(".json").read_text())
    assert {r["case"] for r in payload["results"]} == {
        "pixel",
        "channel",
        "weight_out_channel",
        "weight_full",
    }
    assert all(r["fraction_of_copy"] > 0 for r in payload["results"])


def test_inpaint_quality_benchmark_writes_its_report(tmp_path):
    from tasks import run
    from tests.helpers.jobs import INPAINT_FAST
    from tests.hydra_config import compose_config

    run(compose_config(tmp_path / "train", INPAINT_FAST))
    out = tmp_path / "q"
    result = run_script(
        "benchmarks/bench_inpaint_quality.py",
        "--ckpt",
        str(tmp_path / "train" / "checkpoints" / "last.ckpt"),
        "--size",
        "64",
        "--per-bin",
        "1",
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    payload = json.loads(out.with_suffix(".json").read_text())
    assert set(payload["results"]) == {"ours", "telea", "navier_stokes", "biharmonic"}
    assert len(payload["results"]["telea"]["per_bin"]) == 6
    assert payload["ours_vs_telea_hole_l1"] > 0 and payload["ours_vs_telea_colour_error"] > 0
    # the held-out photos, whole, each with every mask: the score of a perfect fill is not there
    assert "china, flower, grace_hopper" in payload["description"]
    telea = payload["results"]["telea"]["bin_average"]
    assert 0 < telea["hole_l1"] < 0.5 and telea["colour_error"] > 0
    assert "| average |" in out.with_suffix(".md").read_text()
    # paired fill by fill with Telea: the mean difference is the difference of the bin means
    for label, paired in payload["ours_minus_telea_per_fill"].items():
        assert paired["fills"] == 3 and 0 <= paired["fills_better"] <= 3
        ours, telea = (
            payload["results"][m]["per_bin"][label]["hole_l1"] for m in ("ours", "telea")
        )
        assert paired["mean_difference"] == pytest.approx(ours - telea, abs=1e-6)
    assert "fills better" in out.with_suffix(".md").read_text()


def test_prune_step_benchmark_writes_its_report(tmp_path):
    out = tmp_path / "ps"
    args = ["--width", "8", "--batch", "4", "--size", "16", "--rounds", "1", "--out", str(out)]
    result = run_script("benchmarks/bench_prune_step.py", *args)
    assert result.returncode == 0, result.stderr[-2000:]
    payload = json.loads(out.with_suffix(".json").read_text())
    assert set(payload["results"]) == {"dense", "ours_movement", "ours_magnitude", "torch_prune"}
    assert payload["results"]["dense"]["ratio_to_dense"] == 1.0


def test_prune_compare_benchmark_writes_its_report(tmp_path):
    out = tmp_path / "pc"
    overrides = [
        "net.width=8",
        "data.size=16",
        "+trainer.limit_train_batches=2",
        "task.dense_epochs=1",
        "task.latency.repeats=1",
        "task.latency.warmup=0",
        "task.latency.batches=[2]",
        f"task.cache_dir={tmp_path / 'cache'}",
    ]
    result = run_script(
        "benchmarks/bench_prune_compare.py", "--quick", "--out", str(out), *overrides, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(out.with_suffix(".json").read_text())
    unstructured = payload["results"]["unstructured"]["rows"]
    structured = payload["results"]["structured"]["rows"]
    assert unstructured[0]["method"].startswith("torch.nn.utils.prune")
    assert structured[0]["method"].startswith("Torch-Pruning")
    assert all(r["final"]["macs"] < r["dense"]["macs"] for r in structured)
    assert "| ours: magnitude |" in out.with_suffix(".md").read_text()


# a ViT of 2 blocks and 4 heads, one dense epoch of 2 batches, one latency call: the benchmarks'
# plumbing, not their numbers
TINY_VIT = [
    "net.num_layers=2",
    "net.hidden_dim=32",
    "net.num_heads=4",
    "net.mlp_dim=48",
    "+trainer.limit_train_batches=2",
    "task.dense_epochs=1",
    "task.latency.repeats=1",
    "task.latency.warmup=0",
    "task.latency.batches=[2]",
    "task.latency.onnxruntime=false",
]


def test_vit_benchmark_writes_ours_and_torch_pruning_at_matched_macs(tmp_path):
    out = tmp_path / "vit"
    overrides = [*TINY_VIT, f"task.cache_dir={tmp_path / 'cache'}"]
    # a tiny ViT and budget; the generous timeout is for a loaded 2-core machine, not a target
    result = run_script(
        "benchmarks/bench_prune_vit.py", "--quick", "--out", str(out), *overrides, timeout=900
    )
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(out.with_suffix(".json").read_text())
    rows = payload["results"]["50 % of heads and of MLP neurons"]["rows"]
    ours = [r for r in rows if r["method"].startswith("ours")]
    theirs = [r for r in rows if r["method"].startswith("Torch-Pruning")]
    assert [r["method"] for r in ours] == ["ours: magnitude", "ours: taylor"] and len(theirs) == 2
    # Torch-Pruning's ratio is chosen to land near our MACs, and every entry is cheaper
    for row in theirs:
        assert abs(row["final"]["macs"] / ours[0]["final"]["macs"] - 1) < 0.15
    assert all(r["final"]["macs"] < r["dense"]["macs"] for r in rows)
    assert (
        payload["results"]["dense, fine-tuned"]["rows"][0]["final"]["macs"]
        == rows[0]["dense"]["macs"]
    )
    assert "The dense ViT fine-tuned for the same budget" in out.with_suffix(".md").read_text()
    # the narrower residual stream (a quarter of every width) is measured against the same peer
    widths = payload["results"]["25 % of heads, of MLP neurons and of the hidden width"]["rows"]
    assert [r["method"] for r in widths][:2] == ["ours: magnitude", "ours: taylor"]
    assert all(r["final"]["macs"] < r["dense"]["macs"] for r in widths)


@pytest.mark.slow
def test_vit_benchmark_repeats_whole_runs_per_seed(tmp_path):
    out = tmp_path / "seeds"
    setting = "50 % of heads and of MLP neurons"
    overrides = [*TINY_VIT, f"task.cache_dir={tmp_path / 'cache'}"]
    args = ["--quick", "--seeds", "0", "1", "--settings", setting, "--out", str(out)]
    # the generous timeout is for a loaded 2-core machine, not a target
    result = run_script("benchmarks/bench_prune_vit.py", *args, *overrides, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(out.with_suffix(".json").read_text())
    assert payload["seeds"] == [0, 1] and set(payload["runs"]) == {"0", "1"}
    for run in payload["runs"].values():
        methods = [r["method"] for r in run["results"][setting]["rows"]]
        assert methods[:2] == ["ours: magnitude", "ours: taylor"] and len(methods) == 4
    # each seed is a whole run: its own split and dense model (cached apart)
    assert len(list((tmp_path / "cache").glob("dense-*.pt"))) == 2
    text = out.with_suffix(".md").read_text()
    assert "| seed 0 | seed 1 | mean ± sd |" in text and "| Torch-Pruning (group L2) |" in text
    again = run_script("benchmarks/bench_prune_vit.py", "--seeds", "3", "3", timeout=300)
    assert again.returncode == 2 and "--seeds must be distinct, got [3, 3]" in again.stderr


@pytest.mark.slow
def test_language_model_units_benchmark_writes_ours_and_torch_pruning(tmp_path):
    import email

    from tests.helpers.jobs import prune_lm_fast

    out = tmp_path / "lmu"
    # the fast job's tiny Llama without key/value grouping, which Torch-Pruning can trace
    overrides = [o for o in prune_lm_fast(tmp_path) if not o.startswith(("task=", "logger="))]
    overrides = [o for o in overrides if "num_key_value_heads" not in o]
    overrides += ["net.num_key_value_heads=4", f"data.path={Path(email.__file__).parent}"]
    # the generous timeout is for a loaded 2-core machine, not a target
    result = run_script(
        "benchmarks/bench_prune_lm_units.py", "--quick", "--out", str(out), *overrides, timeout=1200
    )
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(out.with_suffix(".json").read_text())
    rows = payload["results"]["50 % of key/value groups and of MLP neurons"]["rows"]
    assert [r["method"] for r in rows[:2]] == ["ours: magnitude", "ours: taylor"]
    assert rows[2]["method"].startswith("Torch-Pruning (group L2")
    assert all(r["final"]["macs"] < r["dense"]["macs"] for r in rows)
    assert all(r["perplexity"]["final"] > 1 for r in rows)
    # the second peer row removes the same units and nothing else: the residual stream stays whole
    # and its MACs are ours (our neurons in multiples of 8, its in multiples of 4: 32 of 64 each)
    same = rows[3]
    assert same["method"].startswith("Torch-Pruning, heads+neurons only")
    assert same["hidden_size"] == 32 and same["final"]["macs"] == rows[0]["final"]["macs"]
    widths = payload["results"]["25 % of key/value groups, of MLP neurons and of the hidden width"]
    assert widths["rows"][2]["method"].startswith("Torch-Pruning")
    assert all(r["final"]["macs"] < r["dense"]["macs"] for r in widths["rows"])
    # with the hidden width too, the same units: a quarter of the 32-wide stream, ours and its
    same = widths["rows"][3]
    assert same["method"].startswith("Torch-Pruning, heads+neurons+hidden only")
    assert same["hidden_size"] == 24 and same["final"]["macs"] == widths["rows"][0]["final"]["macs"]


@pytest.mark.slow
def test_language_model_benchmark_writes_every_method_and_granularity(tmp_path):
    out = tmp_path / "lm"
    # a tiny model and budget; the generous timeout is for a loaded 2-core machine, not a target
    result = run_script("benchmarks/bench_prune_lm.py", "--quick", "--out", str(out), timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(out.with_suffix(".json").read_text())
    rows = {(r["method"], r["granularity"]): r for r in payload["results"]["rows"]}
    oneshot = {(m, g) for m in ("magnitude", "wanda", "sparsegpt") for g in ("50%", "4:8", "2:4")}
    assert set(rows) == oneshot | {("maskllm", "4:8"), ("maskllm", "2:4")}
    dense = payload["results"]["dense"]["dense_ppl"]
    for row in rows.values():
        assert row["dense_ppl"] == pytest.approx(dense)  # one dense model for every entry
        assert row["achieved_sparsity"] == pytest.approx(0.5, abs=1e-3)
        assert row["ppl"] > 1 and row["prune_seconds"] > 0
        assert row["memory"]["peak_from"] in ("VmHWM", "sampled every 10 ms")
        assert row["memory"]["peak_rss_mib"] > 100  # a process holding torch and a model
    assert "| ours | maskllm | — |" in out.with_suffix(".md").read_text()


def test_language_model_scale_row_times_each_block(tmp_path):
    out = tmp_path / "scale"
    args = ["--scale", "--quick", "--scale-methods", "wanda", "sparsegpt", "--out", str(out)]
    result = run_script("benchmarks/bench_prune_lm.py", *args, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(out.with_suffix(".json").read_text())
    config = payload["results"]["config"]
    for row in payload["results"]["rows"]:
        assert len(row["block_seconds"]) == config["num_hidden_layers"]
        assert row["achieved_sparsity"] == pytest.approx(0.5)
        seven_b = row["extrapolation"]["llama_7b_128x2048"]
        assert seven_b["tflop_per_block"] > row["tflop_per_block"] > 0
    sparsegpt, wanda = payload["results"]["rows"][1], payload["results"]["rows"][0]
    assert sparsegpt["tflop_per_block"] > wanda["tflop_per_block"]  # the Hessians and the solve


def test_sparse_benchmark_writes_speedups_and_break_evens(tmp_path):
    out = tmp_path / "sp"
    args = ["--linears", "64x64x8", "--convs", "16x16x3x8x2", "--sparsities", "0.5", "0.9"]
    result = run_script("benchmarks/bench_sparse.py", *args, "--rounds", "1", "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    payload = json.loads(out.with_suffix(".json").read_text())
    linear, conv = payload["results"]
    assert linear["gemm"] == [64, 64, 8] and conv["gemm"] == [16, 144, 128]
    assert set(linear["rows"][1]["speedup"]) == {"rows", "csr", "bsr16", "bsr32", "bsr64", "masked"}
    assert set(conv["rows"][1]["speedup"]) == {"rows", "csr"}
    assert all(v > 0 for row in linear["rows"] for v in row["speedup"].values())
    assert "| break-even |" in out.with_suffix(".md").read_text()
    assert "dispatch" not in payload  # custom shapes never write or check the table


def test_pruned_models_benchmark_writes_its_report(tmp_path):
    out = tmp_path / "pm"
    args = ["--models", "resnet18", "--size", "32", "--batches", "2", "--rounds", "1"]
    result = run_script("benchmarks/bench_pruned_models.py", *args, "--out", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {r["variant"]: r for r in json.loads(out.with_suffix(".json").read_text())["results"]}
    assert set(rows) == {"dense", "compacted", "sparse_weight"}
    assert rows["dense"]["mac_reduction"] == 1.0
    assert 3 < rows["compacted"]["mac_reduction"] < 5  # half the channels: ~a quarter of the MACs
    assert 8 < rows["sparse_weight"]["mac_reduction"] < 12  # 90 % of the weights
    assert "| resnet18 | 2 | compacted |" in out.with_suffix(".md").read_text()


def test_onnx_benchmark_times_both_runtimes_on_checked_exports(tmp_path):
    out = tmp_path / "onnx"
    # generous: four models are exported and checked, about two minutes on 2 loaded cores
    result = run_script("benchmarks/bench_onnx.py", "--quick", "--out", str(out), timeout=1200)
    assert result.returncode == 0, result.stderr[-2000:]
    payload = json.loads(out.with_suffix(".json").read_text())
    assert [r["model"].split(" ")[0] for r in payload["results"]] == ["resnet18_cifar"] * 3 + [
        "pconv_unet"
    ]
    for row in payload["results"]:
        assert row["parity_of_allowed"] <= 1
        for batch in ("batch_1", "batch_4"):
            times = row["batches"][batch]
            assert times["pytorch_ms"] > 0 and times["onnxruntime_ms"] > 0
    assert "| resnet18_cifar compacted 50 % channels |" in out.with_suffix(".md").read_text()


def test_benchmark_runner_rejects_unknown_suites():
    result = run_script("benchmarks/run.py", "--suite", "9")
    assert result.returncode == 2 and "invalid choice: '9'" in result.stderr


def test_jobs_benchmark_records_wall_time_and_metrics(tmp_path):
    from tests.helpers.jobs import INPAINT_FAST

    out = tmp_path / "jobs"
    overrides = [o for o in INPAINT_FAST if o != "task=inpaint"]
    result = run_script(
        "benchmarks/bench_jobs.py", "--jobs", "inpaint", "--out", str(out), "--", *overrides
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = json.loads(out.with_suffix(".json").read_text())["results"]
    assert row["job"] == "inpaint" and row["wall_time_s"] > 0
    assert row["headline"]["train/steps"] == 2 and 0 < row["headline"]["val/ssim"] <= 1
    assert "| inpaint | `python run.py logger=none" in out.with_suffix(".md").read_text()


def naming(code: str, *args: str):
    """Run ``code`` with ``benchmarks/_common.py``'s naming in a child process (importing it pins
    the allocator, which this process should not inherit); return what it printed, as JSON."""
    prelude = "import json, sys\nsys.path.insert(0, 'benchmarks')\nfrom pathlib import Path\n"
    prelude += "from _common import result_name, write_report\n"
    result = run_script("-c", prelude + code, *args)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


WRITE_SIX = """
folder = Path(sys.argv[1])
cpu = {"device": {"type": "cpu", "name": "AMD EPYC"}, "versions": {"torch": "2.14.1+cu130"},
       "date": "2026-12-02T10:00:00+00:00"}
names = [write_report(folder, {**cpu, "run": i}, f"run {i}\\n", suite="partial_conv").name
         for i in range(3)]
names.append(write_report(folder, {**cpu, "benchmark": "inpaint_quality", "variant": "q"}, "").name)
gpu = {"provenance": {**cpu, "device": {"type": "cuda", "name": "NVIDIA H200"}}}
names.append(write_report(folder, gpu, "", suite="sparse").name)
names.append(write_report(folder / "scratch", cpu, "", suite="sparse").name)
print(json.dumps(names))
"""


def test_benchmark_results_are_named_by_suite_device_and_torch_and_kept(tmp_path):
    names = naming(WRITE_SIX, str(tmp_path))
    assert names == [
        "partial_conv--cpu--torch2.14.1",
        "partial_conv--cpu--torch2.14.1--2026-12-02",
        "partial_conv--cpu--torch2.14.1--2026-12-02-2",
        "inpaint_quality-q--cpu--torch2.14.1",
        "sparse--cuda-h200--torch2.14.1",
        "scratch",
    ]
    # the first result is kept, not overwritten by the reruns
    assert json.loads((tmp_path / f"{names[0]}.json").read_text())["run"] == 0
    assert (tmp_path / f"{names[2]}.md").read_text() == "run 2\n"
    assert (tmp_path / "scratch.json").is_file() and (tmp_path / "scratch.md").is_file()


EXPECTED_NAMES = """
names = {}
for path in sorted(Path("benchmarks/results").glob("*.json")):
    names[path.name] = result_name(path.stem.split("--")[0], json.loads(path.read_text()))
print(json.dumps(names))
"""


def test_every_kept_benchmark_result_is_named_from_its_own_provenance():
    names = naming(EXPECTED_NAMES)
    assert names, "benchmarks/results/ holds no results"
    results = REPO / "benchmarks" / "results"
    for filename, expected in names.items():
        stem = filename.removesuffix(".json")
        assert re.fullmatch(re.escape(expected) + r"(--\d{4}-\d\d-\d\d(-\d+)?)?", stem), filename
    assert {p.stem for p in results.glob("*.md")} == {n.removesuffix(".json") for n in names}


def test_device_check_dry_run_runs_every_step_into_at_most_eight_files(tmp_path):
    out = tmp_path / "check"
    # generous: the dry run takes about a minute on 2 idle cores, far longer on a loaded machine
    result = run_script("benchmarks/device_check.py", "--dry-run", "--out", str(out), timeout=1200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    report = json.loads((out / "device_check.json").read_text())
    status = {step["name"]: step["status"] for step in report["steps"]}
    assert status == {
        "setup": "skipped",  # Hydra and kornia are installed here
        "tests": "passed",
        "suite1": "passed",
        "suite2": "passed",
        "suite3": "passed",
        "train": "passed",
    }
    tests = next(step for step in report["steps"] if step["name"] == "tests")
    assert tests["counts"].get("skipped", 0) > 0  # the cuda-marked tests, skipped on CPU
    assert report["train"]["timed_batches"] > 0 and report["train"]["images_per_s"] > 0
    assert report["train"]["bottleneck"] in ("data", "device")
    assert report["provenance"]["commit"] and report["provenance"]["device"]["type"] == "cpu"
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and all(p.is_file() for p in out.iterdir())
    assert "dispatch_table.json" in files
    assert any(name.startswith("mask_product--cpu") for name in files)
    md = (out / "device_check.md").read_text()
    assert "| train | passed |" in md and "images/s" in md


def test_device_check_refuses_a_folder_that_holds_results(tmp_path):
    (tmp_path / "device_check.json").write_text("{}")
    result = run_script("benchmarks/device_check.py", "--dry-run", "--out", str(tmp_path))
    assert result.returncode == 2 and "holds files already" in result.stderr
    assert (tmp_path / "device_check.json").read_text() == "{}"
