"""The examples in public docstrings run and print what they claim, and the relative links of the
README, docs/ and benchmarks/README.md point at files (and headings) that exist."""

import doctest
import importlib
import re
from pathlib import Path

import pytest

MODULES = [
    "masking.functional.mask_product",
    "masking.functional.masked_linear",
    "masking.functional.masked_conv",
    "masking.pruning.sparsify",
    "masking.functional.partial_conv",
    "masking.functional.gated_conv",
    "masking.layers.partial_conv",
    "masking.layers.gated_conv",
    "masking.layers.vanilla_conv",
    "masking.layers.create_conv",
    "masking.models.pconv_unet",
    "masking.models.deepfill",
    "masking.generators.mixed",
    "datamodules.photos",
    "datamodules.digits",
    "masking.models.resnet",
    "masking.models.vit",
    "masking.layers.attention",
    "masking.pruning.schedule",
    "masking.pruning.granularity",
    "masking.pruning.graph",
    "masking.pruning.compact",
    "masking.pruning.export",
    "tasks.runtime.cost",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    globs = {"torch": importlib.import_module("torch"), **vars(module)}
    result = doctest.testmod(module, globs=globs, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0


REPO = Path(__file__).resolve().parent.parent
PAGES = [
    REPO / "README.md",
    REPO / "benchmarks" / "README.md",
    *sorted((REPO / "docs").rglob("*.md")),
]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def headings(page: Path) -> set[str]:
    """GitHub's anchors for the headings of ``page``: lower case, punctuation dropped, spaces to -."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    titles = re.findall(r"^#+\s+(.+?)\s*$", text, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-") for title in titles}


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_relative_links_resolve(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    links = LINK.findall(text)
    broken = []
    for target in links:
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists() or (
            anchor and linked.suffix == ".md" and anchor not in headings(linked)
        ):
            broken.append(target)
    assert not broken, f"{page.relative_to(REPO)}: broken links {broken}"


def test_the_link_check_sees_links():
    assert LINK.findall("see [a](docs/a.md) and ![b](b.png)") == ["docs/a.md", "b.png"]
    assert "suite-1-mask_product-bandwidth" in headings(REPO / "docs" / "performance.md")
