"""Peak memory of ``task=predict`` on large photos: the tiled path against one pass.

    python benchmarks/bench_predict_memory.py                    # 1000², 2000², 5000² (a few minutes)
    python benchmarks/bench_predict_memory.py --sides 600 --untiled 600   # a smoke run

Each case runs ``python run.py task=predict`` in its own process, on a bundled photo (scikit-image's
``astronaut``) upscaled to the side given, with a mask of random strokes over a fifth of it, and a
checkpoint of the default inpainting network (``net=pconv_unet``; its weights do not change the
memory, so they are the initial ones). The peak resident memory is the child's ``ru_maxrss``.
``--untiled`` sides run again with ``task.tile`` above the side: one pass over the whole image.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, machine_line, provenance, write_report


def make_inputs(folder: Path, side: int) -> tuple[Path, Path]:
    from PIL import Image, ImageDraw
    from skimage import data

    photo = Image.fromarray(data.astronaut()).resize((side, side), Image.BICUBIC)
    photo_path = folder / f"photo{side}.png"
    photo.save(photo_path)
    mask = Image.new("L", (side, side), 255)
    draw = ImageDraw.Draw(mask)
    rng = np.random.default_rng(0)
    for _ in range(12):  # strokes of a width ~ side/40 over about a fifth of the image
        points = [tuple(rng.integers(0, side, 2).tolist()) for _ in range(4)]
        draw.line(points, fill=0, width=max(2, side // 40))
    mask_path = folder / f"mask{side}.png"
    mask.save(mask_path)
    return photo_path, mask_path


def make_checkpoint(path: Path) -> None:
    """A checkpoint as task=inpaint writes it, of the default network's config."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config")
    spec = OmegaConf.to_container(cfg.net, resolve=True)
    net = instantiate(spec)
    state = {f"net.{k}": v for k, v in net.state_dict().items()}
    torch.save({"net_spec": spec, "state_dict": state}, path)


def run_case(work: Path, ckpt: Path, side: int, tiled: bool) -> dict:
    photo, mask = make_inputs(work, side)
    out = work / f"out{side}{'' if tiled else '_untiled'}"
    command = [
        sys.executable,
        str(REPO / "run.py"),
        "task=predict",
        f"ckpt_path={ckpt}",
        f"input={photo}",
        f"masks={mask}",
        f"output={out}",
        f"hydra.run.dir={work / ('run' + out.name)}",
    ]
    if not tiled:
        command.append(f"task.tile={side + 1}")
    # a fresh parent per case, so that its RUSAGE_CHILDREN peak is this case's alone
    wrapper = (
        "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)"
    )
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", wrapper, *command], cwd=REPO, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"error: predict at {side}² failed:\n{result.stderr[-2000:]}")
    peak_kib = int(result.stdout.strip().splitlines()[-1])
    return {
        "side": side,
        "megapixels": side * side / 1e6,
        "tiled": tiled,
        "peak_rss_gib": peak_kib / 2**20,
        "wall_time_s": wall,
    }


def markdown(payload: dict) -> str:
    lines = [
        "# task=predict: peak memory on large photos",
        "",
        f"{machine_line(payload)}; default network, tiles of {payload['tile']}² with "
        f"{payload['overlap']} px overlap.",
        "",
        "| image | path | peak RSS | wall time |",
        "|---|---|---:|---:|",
    ]
    for row in payload["results"]:
        tiles = row["tiled"] and row["side"] ** 2 > payload["tile"] ** 2
        path = "tiles" if tiles else "one pass"
        lines.append(
            f"| {row['side']}×{row['side']} ({row['megapixels']:.1f} MP) | {path} | "
            f"{row['peak_rss_gib']:.2f} GiB | {row['wall_time_s']:.0f} s |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    from tasks.modules.inference import OVERLAP, TILE

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", nargs="+", type=int, default=[1000, 2000, 5000])
    parser.add_argument("--untiled", nargs="*", type=int, default=[2000])
    parser.add_argument("--out", type=Path, default=None, help="results folder or file stem")
    args = parser.parse_args()
    cases = sorted([(s, True) for s in args.sides] + [(s, False) for s in args.untiled])
    with tempfile.TemporaryDirectory(prefix="bench_predict_") as tmp:
        work = Path(tmp)
        ckpt = work / "net.ckpt"
        make_checkpoint(ckpt)
        results = []
        for side, tiled in cases:
            row = run_case(work, ckpt, side, tiled)
            print(json.dumps(row), flush=True)
            results.append(row)
    payload = {
        "benchmark": "predict_memory",
        **provenance(torch.device("cpu")),
        "tile": TILE,
        "overlap": OVERLAP,
        "results": sorted(results, key=lambda r: (r["side"], not r["tiled"])),
    }
    write_report(args.out, payload, markdown(payload), suite="predict_memory")


if __name__ == "__main__":
    main()
