"""The measured dispatch: which path ``choose`` picks from a table, overrides, and fallbacks."""

import math

import pytest
import torch

from masking.kernels import table

TABLE = {
    "kind": "cpu",
    "ops": {
        "linear": {
            "float32": [
                {
                    "shape": [4096, 4096, 256],
                    "paths": {
                        "csr": [[0.5, 0.4], [0.8, 1.2], [0.9, 2.5], [0.95, 5.0]],
                        "bsr32": [[0.5, 0.6], [0.8, 1.4], [0.9, 2.9]],
                        "rows": [[0.5, 1.9], [0.9, 9.0]],
                    },
                },
                {"shape": [768, 3072, 256], "paths": {"csr": [[0.5, 0.2], [0.99, 0.9]]}},
            ]
        }
    },
}


@pytest.fixture
def measured(monkeypatch):
    monkeypatch.setattr(table, "load_table", lambda kind: TABLE if kind == "cpu" else None)


def pick(sparsities: dict, shape=(4096, 4096, 256), dtype=torch.float32):
    return table.choose("linear", "cpu", dtype, shape, sparsities.get)


def test_dense_below_every_measured_break_even(measured):
    for s in (0.0, 0.3, 0.6, 0.79):
        assert pick({"csr": s, "bsr32": 0.0, "rows": 0.0}).path == "dense"


def test_the_fastest_path_at_the_largest_measured_sparsity_not_above(measured):
    choice = pick({"csr": 0.93, "bsr32": 0.0, "rows": 0.0})
    assert (choice.path, choice.speedup) == ("csr", 2.5)  # 0.93 looks up 0.90, never 0.95
    assert pick({"csr": 0.93, "bsr32": 0.91, "rows": 0.0}).path == "bsr32"
    assert pick({"csr": 0.93, "bsr32": 0.91, "rows": 0.6}).path == "bsr32"  # rows: 1.9 < 2.9
    assert pick({"csr": 0.95, "bsr32": None, "rows": None}).speedup == 5.0  # None: cannot run


def test_a_path_just_above_dense_is_not_worth_it(measured, monkeypatch):
    monkeypatch.setattr(table, "MIN_GAIN", 1.3)
    assert pick({"csr": 0.85, "bsr32": 0.0, "rows": 0.0}).path == "dense"  # 1.2 < 1.3
    assert pick({"csr": 0.85, "bsr32": 0.85, "rows": 0.0}).path == "bsr32"  # 1.4


def test_the_nearest_measured_shape_is_used(measured):
    # a ViT-sized layer is nearest to the 768x3072 entry, where csr never beat dense
    assert pick({"csr": 0.99}, shape=(768, 3072, 128)).path == "dense"
    assert pick({"csr": 0.99}, shape=(4096, 4096, 128)).path == "csr"


def test_unmeasured_devices_and_dtypes_fall_back_to_dense(measured):
    choice = pick({"csr": 0.99}, dtype=torch.float16)
    assert choice.path == "dense" and "float16" in choice.reason
    choice = table.choose("linear", "meta", torch.float32, (1, 1, 1), {"csr": 0.99}.get)
    assert choice.path == "dense" and "no measured table for meta" in choice.reason


def test_an_override_wins_and_is_restored(measured):
    with table.prefer("linear", "bsr16"):
        choice = pick({"csr": 0.1})
        assert choice.path == "bsr16" and choice.reason == "override" and math.isnan(choice.speedup)
    assert pick({"csr": 0.1}).path == "dense"


def test_override_names_are_checked():
    with pytest.raises(ValueError, match="op must be one of"):
        table.set_path("matmul", "csr")
    with pytest.raises(ValueError, match="MASKING_PATHS must be comma-separated op=path"):
        table._parse_env("linear:csr")
    assert table._parse_env("linear=csr, conv2d=dense") == {"linear": "csr", "conv2d": "dense"}


def test_device_kind_names():
    assert table.device_kind("cpu") == "cpu"
    assert table.device_kind(torch.device("cpu")) == "cpu"


def test_the_committed_cpu_table_is_well_formed():
    committed = table.load_table("cpu")
    assert committed is not None, (
        "benchmarks/bench_sparse.py writes masking/kernels/tables/cpu.json"
    )
    assert committed["kind"] == "cpu" and committed["provenance"]["commit"]
    for op, by_dtype in committed["ops"].items():
        assert op in table.OPS
        for entries in by_dtype.values():
            for entry in entries:
                assert len(entry["shape"]) == 3
                for points in entry["paths"].values():
                    sparsities = [s for s, _ in points]
                    assert sparsities == sorted(sparsities)
                    assert all(speedup > 0 for _, speedup in points)
