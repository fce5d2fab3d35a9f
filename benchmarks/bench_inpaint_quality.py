"""Inpainting quality per hole-ratio bin: a checkpoint against OpenCV and scikit-image baselines.

    python benchmarks/bench_inpaint_quality.py --ckpt outputs/inpaint/<date>/checkpoints/last.ckpt

By default the held-out photos (``datamodules.HELD_OUT_PHOTOS``: scikit-learn's china and flower,
matplotlib's grace_hopper; the default job never trains on them) are inpainted whole, the shorter
side resized to ``--size`` (256: what ``task=predict`` meets) and centre-cropped, every photo with
every one of the ``--per-bin`` (12) fixed evaluation masks of each of the six PConv bins; ``--native``
keeps each photo at its own size (the masks scaled to it, nearest, so hole ratios stay). With
``--root`` a folder's validation split is used instead (tiles of ``--size``). The checkpoint,
OpenCV's Telea and Navier-Stokes inpainting and scikit-image's biharmonic inpainting fill the same
holes; each composite is scored with hole-L1, PSNR, SSIM and the colour error (CIELAB chroma of
the blurred fill against the truth), and the checkpoint's hole-L1 is paired with Telea's fill by
fill (mean difference, its standard error, fills better per bin); the JSON and Markdown go to
benchmarks/results/inpaint_held_out[_native]--<device>--torch<version>.{json,md} (with
``--root``: inpaint_quality--...; ``--variant experiment_quality``: ...-experiment_quality--...).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import provenance, write_report

from datamodules import HELD_OUT_PHOTOS, InpaintingDataModule, load_bundled_photo
from masking.generators import HOLE_RATIO_BINS, bin_name, evaluation_masks
from tasks.modules.inference import inpaint
from tasks.modules.metrics import NAMES, per_image_scores
from tasks.runtime.checkpoints import load_inpainting_network


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    return (image.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy()


def _from_uint8(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(array).permute(2, 0, 1).float() / 255


def classical_methods(radius: int) -> dict:
    import cv2
    from skimage.restoration import inpaint_biharmonic

    def opencv(flag):
        def run(image, mask):
            holes = (mask.numpy() < 0.5).astype(np.uint8)
            return _from_uint8(cv2.inpaint(_to_uint8(image), holes, radius, flag))

        return run

    def biharmonic(image, mask):
        holes = mask.numpy() < 0.5
        filled = inpaint_biharmonic(image.permute(1, 2, 0).numpy(), holes, channel_axis=-1)
        return torch.from_numpy(filled).permute(2, 0, 1).float().clamp(0, 1)

    return {
        "telea": opencv(cv2.INPAINT_TELEA),
        "navier_stokes": opencv(cv2.INPAINT_NS),
        "biharmonic": biharmonic,
    }


def _fit(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(mask.shape) == size:
        return mask
    return torch.nn.functional.interpolate(mask[None, None], size=size, mode="nearest")[0, 0]


def evaluate(
    methods: dict, images: list[torch.Tensor], masks: dict[str, torch.Tensor], every_mask: bool
) -> dict:
    """Per method and bin the mean scores; image i takes mask i mod per_bin of every bin, or every
    mask of every bin with ``every_mask``."""
    results = {}
    for name, method in methods.items():
        per_bin, seconds = {}, 0.0
        for bin_label, bin_masks in masks.items():
            scores = []
            pairs = [
                (image, bin_masks[k, 0])
                for i, image in enumerate(images)
                for k in (range(len(bin_masks)) if every_mask else [i % len(bin_masks)])
            ]
            for image, mask in tqdm(pairs, desc=f"{name} {bin_label}", leave=False):
                mask = _fit(mask, tuple(image.shape[1:]))
                start = time.perf_counter()
                filled = method(image, mask)
                seconds += time.perf_counter() - start
                composite = image * mask + filled * (1 - mask)
                scores.append(per_image_scores(composite[None], image[None], mask[None, None])[0])
            stacked = torch.stack(scores)
            mean = stacked.mean(0)
            per_bin[bin_label] = {n: float(mean[j]) for j, n in enumerate(NAMES)}
            per_bin[bin_label]["hole_l1_per_fill"] = stacked[:, NAMES.index("hole_l1")].tolist()
        averaged = {n: float(np.mean([v[n] for v in per_bin.values()])) for n in NAMES}
        results[name] = {
            "per_bin": per_bin,
            "bin_average": averaged,
            "seconds_per_image": seconds / (len(pairs) * len(masks)),
        }
    return results


def paired_with(results: dict, reference: str, method: str = "ours") -> dict:
    """Per bin, ``method``'s hole-L1 minus ``reference``'s on the same fills (image and mask):
    the mean, its standard error and how many fills ``method`` does better, so that a bin decided
    by one or two fills shows as one."""
    paired = {}
    for label, ours in results[method]["per_bin"].items():
        diff = torch.tensor(ours["hole_l1_per_fill"]) - torch.tensor(
            results[reference]["per_bin"][label]["hole_l1_per_fill"]
        )
        spread = float(diff.std()) / len(diff) ** 0.5 if len(diff) > 1 else float("nan")
        paired[label] = {
            "mean_difference": float(diff.mean()),
            "standard_error": spread,
            "fills_better": int((diff < 0).sum()),
            "fills": len(diff),
        }
    return paired


def markdown(payload: dict) -> str:
    methods = list(payload["results"])
    lines = [
        f"Inpainting quality on {payload['description']}, {payload['per_bin']} masks per bin, "
        f"checkpoint `{payload['checkpoint']}`, commit {str(payload['commit'])[:10]}. Hole-L1 "
        "(lower is better) / PSNR dB / SSIM / colour error (CIELAB chroma, lower is better) of "
        "the composite.",
        "",
        "| bin | " + " | ".join(methods) + " |",
        "|---|" + "---:|" * len(methods),
    ]
    bins = [bin_name(lo, hi) for lo, hi in HOLE_RATIO_BINS] + ["average"]
    for label in bins:
        cells = []
        for m in methods:
            r = payload["results"][m]
            v = r["bin_average"] if label == "average" else r["per_bin"][label]
            cells.append(
                f"{v['hole_l1']:.4f} / {v['psnr']:.2f} / {v['ssim']:.3f} / {v['colour_error']:.2f}"
            )
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    ratio = payload.get("ours_vs_telea_hole_l1")
    if ratio is not None:
        lines += [
            "",
            f"Bin-averaged hole-L1, ours / Telea: {ratio:.3f}; bins where ours beats "
            f"Telea on hole-L1: {payload['bins_beating_telea']} of 6. Colour error, ours / "
            f"Telea: {payload['ours_vs_telea_colour_error']:.3f}.",
        ]
    paired = payload.get("ours_minus_telea_per_fill")
    if paired:
        lines += [
            "",
            "Paired with Telea on the same fills, ours minus Telea's hole-L1 (negative: ours "
            "better): mean ± standard error, fills where ours is better.",
            "",
            "| bin | mean difference | fills better |",
            "|---|---:|---:|",
        ]
        for label, p in paired.items():
            lines.append(
                f"| {label} | {p['mean_difference']:+.4f} ± {p['standard_error']:.4f} | "
                f"{p['fills_better']} of {p['fills']} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--ckpt", type=Path, default=None, help="checkpoint written by task=inpaint"
    )
    parser.add_argument(
        "--root", type=Path, default=None, help="image folder (default: bundled photos)"
    )
    parser.add_argument(
        "--size", type=int, default=256, help="photo size (with --root: the tile size)"
    )
    parser.add_argument(
        "--native", action="store_true", help="the held-out photos at their own size"
    )
    parser.add_argument(
        "--per-bin",
        type=int,
        default=12,
        help="evaluation masks per bin (the first 4 of 12 are the 4-mask set: same seed)",
    )
    parser.add_argument("--max-images", type=int, default=48, help="--root: validation tiles used")
    parser.add_argument(
        "--split-seed", type=int, default=0, help="--root: the run's data.split_seed"
    )
    parser.add_argument("--radius", type=int, default=3, help="OpenCV inpainting radius")
    parser.add_argument("--out", type=Path, default=None, help="results folder or file stem")
    parser.add_argument(
        "--variant", default=None, help="named in the result file, e.g. experiment_quality"
    )
    args = parser.parse_args(argv)
    if args.ckpt is not None and not args.ckpt.is_file():
        parser.error(f"--ckpt {args.ckpt} is not a file")
    if args.native and args.root is not None:
        parser.error("--native applies to the held-out photos, not to --root")
    if args.root is None:
        names = HELD_OUT_PHOTOS
        images = [load_bundled_photo(n, size=None if args.native else args.size) for n in names]
        sizes = sorted({"x".join(map(str, i.shape[1:])) for i in images})
        where = "at their own size" if args.native else f"at {args.size} px"
        description = f"the held-out photos {', '.join(names)} ({', '.join(sizes)}), whole, {where}"
    else:
        dm = InpaintingDataModule(
            args.root,
            crop_size=args.size,
            val_crops="tiled",
            max_val_crops=args.max_images,
            split_seed=args.split_seed,
        )
        dm.setup()
        dataset = dm.val_dataloader().dataset
        images = [dataset[i] for i in range(len(dataset))]
        description = f"{len(images)} validation tiles of {args.size} px from {args.root}"
    masks = evaluation_masks(args.size, args.per_bin, seed=0)
    methods = {}
    if args.ckpt is not None:
        net = load_inpainting_network(args.ckpt)
        methods["ours"] = lambda image, mask: inpaint(net, image, mask)
    methods.update(classical_methods(args.radius))
    results = evaluate(methods, images, masks, every_mask=args.root is None)
    payload = {
        "benchmark": "inpaint_quality",
        **provenance(torch.device("cpu")),
        "checkpoint": str(args.ckpt) if args.ckpt else None,
        "size": args.size,
        "native": args.native,
        "description": description,
        "per_bin": args.per_bin,
        "images": len(images),
        "results": results,
    }
    if args.variant:
        payload["variant"] = args.variant
    if "ours" in results:
        ours, telea = results["ours"], results["telea"]
        payload["ours_vs_telea_hole_l1"] = (
            ours["bin_average"]["hole_l1"] / telea["bin_average"]["hole_l1"]
        )
        payload["ours_vs_telea_colour_error"] = (
            ours["bin_average"]["colour_error"] / telea["bin_average"]["colour_error"]
        )
        payload["bins_beating_telea"] = sum(
            ours["per_bin"][b]["hole_l1"] < telea["per_bin"][b]["hole_l1"] for b in ours["per_bin"]
        )
        payload["ours_minus_telea_per_fill"] = paired_with(results, "telea")
    suite = "inpaint_quality" if args.root is not None else "inpaint_held_out"
    write_report(
        args.out, payload, markdown(payload), suite=suite + ("_native" if args.native else "")
    )
    return payload


if __name__ == "__main__":
    main()
