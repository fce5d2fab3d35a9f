"""Files the user names are data, never code: a crafted checkpoint, network spec, weights file or
cache runs nothing when loaded, and the user gets one line. Each crafted file would create a marker
file if anything in it were called; the tests assert the marker never appears."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from masking.generators import evaluation_masks
from tasks import run
from tasks.jobs.predict import run_predict
from tasks.runtime.checkpoints import build_network, trusted
from tests.helpers.jobs import INPAINT_FAST, prune_fast, prune_inpaint_fast
from tests.hydra_config import compose_config

SPEC = {"_target_": "masking.models.PConvUNet", "depth": 3, "base_width": 8, "max_width": 16}


class Exploit:
    """Pickles as a call of ``open(marker, "w")``: loading it with pickle creates the marker."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def net_state(spec=SPEC):
    return {f"net.{k}": v for k, v in instantiate(spec).state_dict().items()}


def one_line(error) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    return message


@pytest.fixture
def marker(tmp_path):
    path = tmp_path / "pwned"
    yield path
    assert not path.exists(), "a file the user named ran code"


@pytest.fixture
def photo(tmp_path):
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(tmp_path / "x.png")
    mask = np.full((16, 16), 255, np.uint8)
    mask[4:8, 4:8] = 0
    Image.fromarray(mask).save(tmp_path / "m.png")
    return tmp_path / "x.png", tmp_path / "m.png"


def predict(tmp_path, ckpt, photo, **extra):
    return run_predict(
        ckpt_path=ckpt,
        input_path=photo[0],
        masks_path=photo[1],
        output_dir=tmp_path / "out",
        holes_are_white=False,
        device="cpu",
        run_dir=tmp_path / "run",
        **extra,
    )


def test_predict_refuses_a_checkpoint_with_a_pickled_call(tmp_path, marker, photo):
    ckpt = tmp_path / "crafted.ckpt"
    torch.save({"net_spec": SPEC, "state_dict": net_state(), "x": Exploit(marker)}, ckpt)
    with pytest.raises(ValueError, match="is not a readable checkpoint of tensors") as error:
        predict(tmp_path, ckpt, photo)
    assert str(ckpt) in one_line(error)
    assert not (tmp_path / "out" / "x.png").exists()


@pytest.mark.parametrize(
    "spec",
    [
        {"_target_": "os.system", "_args_": ["touch {marker}"]},
        {"_target_": "builtins.open", "_args_": ["{marker}", "w"]},
        # a nested config: the outer network is allowed, its argument is not
        {**SPEC, "layer": {"_target_": "builtins.open", "_args_": ["{marker}", "w"]}},
        # a module of an allowed package's name that is not a network builder
        {"_target_": "torch.save", "_args_": [{}, "{marker}"]},
    ],
    ids=["os.system", "open", "nested", "torch.save"],
)
def test_predict_builds_only_allowed_networks(tmp_path, marker, photo, spec):
    def fill(value):
        if isinstance(value, str):
            return value.replace("{marker}", str(marker))
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fill(v) for v in value]
        return value

    ckpt = tmp_path / "spec.ckpt"
    torch.save({"net_spec": fill(spec), "state_dict": net_state()}, ckpt)
    with pytest.raises(ValueError, match=r"is not allowed; a network described in a file") as error:
        predict(tmp_path, ckpt, photo)
    assert "trusted_builders=" in one_line(error)


def make_net(depth: int = 3):
    """A user's own network builder (stands for a class in the user's package)."""
    from masking.models import PConvUNet

    return PConvUNet(depth=depth, base_width=8, max_width=16)


def test_a_users_own_network_loads_once_trusted(tmp_path, photo):
    target = f"{__name__}.make_net"
    spec = {"_target_": target, "depth": 3}
    state = {k.removeprefix("net."): v for k, v in net_state(SPEC).items()}
    with pytest.raises(ValueError, match=f"trusted_builders=\\[{target}\\]"):
        build_network(spec, state, origin="ckpt_path 'x'")
    net = build_network(spec, state, origin="ckpt_path 'x'", builders=trusted([target]))
    assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())
    ckpt = tmp_path / "own.ckpt"
    torch.save({"net_spec": spec, "state_dict": net_state(SPEC)}, ckpt)
    assert predict(tmp_path, ckpt, photo, builders=trusted([target])) == {"predict/images": 1.0}
    with pytest.raises(ValueError, match="trusted_builders must be a list"):
        trusted("tests.make_net")


def test_predict_refuses_weights_holding_nan(tmp_path, photo):
    state = net_state()
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first] = torch.full_like(state[first], float("nan"))
    ckpt = tmp_path / "nan.ckpt"
    torch.save({"net_spec": SPEC, "state_dict": state}, ckpt)
    with pytest.raises(ValueError, match="the weights hold NaN or inf") as error:
        predict(tmp_path, ckpt, photo)
    assert first.removeprefix("net.") in one_line(error)


def test_resume_refuses_a_checkpoint_with_a_pickled_call(tmp_path, marker):
    ckpt = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}, "epoch": 0, "x": Exploit(marker)}, ckpt)
    cfg = compose_config(tmp_path / "run", [*INPAINT_FAST, f"ckpt_path={ckpt}"])
    with pytest.raises(ValueError, match="is not a readable checkpoint of tensors") as error:
        run(cfg)
    assert str(ckpt) in one_line(error)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x00" * 64, "is not a readable checkpoint of tensors"),
        ("truncated", "is not a readable checkpoint of tensors"),
        ({"weights": torch.ones(2)}, "is not a Lightning checkpoint"),
    ],
    ids=["random bytes", "truncated", "no state_dict"],
)
def test_resume_from_a_file_that_is_no_checkpoint_is_one_line(tmp_path, content, message):
    ckpt = tmp_path / "bad.ckpt"
    if content == "truncated":
        torch.save({"state_dict": net_state()}, ckpt)
        ckpt.write_bytes(ckpt.read_bytes()[:200])
    elif isinstance(content, bytes):
        ckpt.write_bytes(content)
    else:
        torch.save(content, ckpt)
    cfg = compose_config(tmp_path / "run", [*INPAINT_FAST, f"ckpt_path={ckpt}"])
    with pytest.raises(ValueError, match=message) as error:
        run(cfg)
    one_line(error)


def test_resume_with_another_layer_names_the_mismatch_in_one_line(tmp_path):
    run(compose_config(tmp_path / "partial", INPAINT_FAST))
    ckpt = tmp_path / "partial" / "checkpoints" / "last.ckpt"
    cfg = compose_config(tmp_path / "gated", [*INPAINT_FAST, "layer=gated", f"ckpt_path={ckpt}"])
    with pytest.raises(ValueError, match="the checkpoint does not fit this run's InpaintingModule"):
        run(cfg)


def test_prune_refuses_pretrained_weights_with_a_pickled_call(tmp_path, marker):
    weights = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.ones(1), "x": Exploit(marker)}, weights)
    cfg = compose_config(tmp_path / "run", [*prune_fast(tmp_path), f"task.pretrained={weights}"])
    with pytest.raises(ValueError, match="is not a readable torch file of tensors") as error:
        run(cfg)
    assert str(weights) in one_line(error)


def test_prune_inpaint_builds_only_allowed_networks(tmp_path, marker):
    ckpt = tmp_path / "spec.ckpt"
    spec = {"_target_": "builtins.open", "_args_": [str(marker), "w"]}
    torch.save({"net_spec": spec, "state_dict": net_state()}, ckpt)
    overrides = prune_inpaint_fast(tmp_path, f"task.pretrained={ckpt}")
    with pytest.raises(ValueError, match="is not allowed; a network described in a file"):
        run(compose_config(tmp_path / "run", overrides))


def test_a_crafted_evaluation_mask_cache_is_regenerated_not_run(tmp_path, marker):
    reference = evaluation_masks(16, 1, seed=3)
    evaluation_masks(16, 1, seed=3, cache_dir=tmp_path)
    (cache,) = tmp_path.glob("eval_masks_*.pt")
    torch.save({"x": Exploit(marker)}, cache)
    with pytest.warns(UserWarning, match="is unreadable .*regenerating it"):
        masks = evaluation_masks(16, 1, seed=3, cache_dir=tmp_path)
    assert all(torch.equal(masks[k], reference[k]) for k in reference)
    torch.save({"hole_01_10": torch.ones(1)}, cache)  # readable, but not the promised set
    with pytest.warns(UserWarning, match="not the mask set"):
        evaluation_masks(16, 1, seed=3, cache_dir=tmp_path)
