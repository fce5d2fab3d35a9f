"""The pictures of a sweep summary: quality against sparsity with its Pareto front for pruning
jobs, quality per hole-ratio bin for inpainting jobs."""

from __future__ import annotations

import io

from .reading import Job, varying_overrides


def _figure():
    # matplotlib takes a second to import: only sweeps that plot pay for it
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    return buffer.getvalue()


def pareto_front(
    points: list[tuple[float, float]], resolution: float = 1e-3
) -> list[tuple[float, float]]:
    """The points no other point beats on both sparsity and quality (higher is better for both),
    by increasing sparsity. Sparsities within ``resolution`` count as equal (a target of 0.9 is
    reached as 0.8999998 or 0.9000001 depending on ties)."""
    front: list[tuple[float, float]] = []
    for sparsity, quality in sorted(points, key=lambda p: (-round(p[0] / resolution), -p[1])):
        if not front or quality > front[-1][1]:
            front.append((sparsity, quality))
    return sorted(front)


# quality metrics where a lower value is better
LOWER_IS_BETTER = ("final/ppl",)


def _quality_key(job: Job) -> str | None:
    for key in ("final/acc", "final/psnr", "final/ppl"):
        if key in job.metrics:
            return key
    return None


def plot_pareto(jobs: list[Job]) -> bytes | None:
    """Final quality against achieved sparsity for the pruning jobs; None when there are none."""
    rows = [j for j in jobs if "final/sparsity" in j.metrics and _quality_key(j)]
    if not rows:
        return None
    key = _quality_key(rows[0])
    rows = [j for j in rows if key in j.metrics]
    plt = _figure()
    figure, axes = plt.subplots(figsize=(7, 4.5))
    groups: dict[str, list[tuple[float, float]]] = {}
    for job in rows:
        method = job.report.get("method") or job.overrides.get("pruning", "?")
        granularity = job.report.get("granularity") or job.overrides.get(
            "pruning.granularity", "weight"
        )
        groups.setdefault(f"{method}, {granularity}", []).append(
            (job.metrics["final/sparsity"], job.metrics[key])
        )
    for name, points in sorted(groups.items()):
        xs, ys = zip(*sorted(points))
        axes.plot(xs, ys, marker="o", label=name)
    sign = -1.0 if key in LOWER_IS_BETTER else 1.0  # the front is computed with higher = better
    signed = [(x, sign * y) for points in groups.values() for x, y in points]
    front = [(x, sign * y) for x, y in pareto_front(signed)]
    if front:
        xs, ys = zip(*front)
        axes.plot(xs, ys, "k--", linewidth=1, label="Pareto front")
        axes.scatter(xs, ys, s=160, facecolors="none", edgecolors="k", linewidths=1.2)
    dense_key = key.replace("final/", "dense/")
    dense = [j.metrics[dense_key] for j in rows if dense_key in j.metrics]
    if dense:
        axes.axhline(sum(dense) / len(dense), color="grey", linestyle=":", label="dense")
    axes.set_xlabel(
        "achieved sparsity (fraction of weights, or of channels for channel granularity)"
    )
    axes.set_ylabel(
        {
            "final/acc": "final accuracy (%)",
            "final/psnr": "final PSNR (dB)",
            "final/ppl": "final held-out perplexity (lower is better)",
        }[key]
    )
    if key == "final/ppl":
        axes.set_yscale("log")
    axes.set_title("Quality against sparsity, one line per estimator and granularity")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    data = _png(figure)
    plt.close(figure)
    return data


def _bins(job: Job) -> list[str]:
    return sorted(k.rsplit("/", 1)[1] for k in job.metrics if k.startswith("val/psnr/hole_"))


def _bin_label(name: str) -> str:
    low, high = name.removeprefix("hole_").split("_")
    return f"{int(low)}–{int(high)} %"


def _styles(jobs: list[Job], keys: list[str], styles: list[str]) -> dict[str, str]:
    """A style per job from the value of ``keys`` (the same value, the same style)."""
    values = list(dict.fromkeys(tuple(job.overrides.get(k) for k in keys) for job in jobs))
    return {
        job.label: styles[values.index(tuple(job.overrides.get(k) for k in keys)) % len(styles)]
        for job in jobs
    }


def plot_bins(jobs: list[Job]) -> bytes | None:
    """PSNR and hole L1 per hole-ratio bin, one line per inpainting job; None when there are
    none."""
    rows = [j for j in jobs if _bins(j)]
    if not rows:
        return None
    varying = varying_overrides(rows)
    plt = _figure()
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    # colour by the first override that varies (e.g. layer), line style by the second (mask)
    colours = _styles(rows, varying[:1], [f"C{i}" for i in range(10)])
    dashes = _styles(rows, varying[1:2], ["-", "--", ":", "-."])
    for job in rows:
        bins = _bins(job)
        label = ", ".join(f"{k}={job.overrides.get(k, '')}" for k in varying) or job.label
        style = {"color": colours[job.label], "linestyle": dashes[job.label], "marker": "o"}
        x = range(len(bins))
        left.plot(x, [job.metrics[f"val/psnr/{b}"] for b in bins], label=label, **style)
        right.plot(x, [job.metrics[f"val/hole_l1/{b}"] for b in bins], label=label, **style)
    bins = _bins(rows[0])
    for axes, title in ((left, "PSNR (dB), higher is better"), (right, "hole L1, lower is better")):
        axes.set_xticks(range(len(bins)), [_bin_label(b) for b in bins], fontsize=8)
        axes.set_xlabel("hole ratio of the evaluation masks")
        axes.set_title(title)
        axes.grid(alpha=0.3)
    right.legend(fontsize=7, loc="upper left")
    figure.suptitle("Inpainting quality by hole-ratio bin, one line per job")
    data = _png(figure)
    plt.close(figure)
    return data
