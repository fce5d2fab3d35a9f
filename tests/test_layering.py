"""The import graph points one way: run → jobs → serve → pruning, modules, sweep → runtime →
masking, with no cycle, and no function-local import that exists to dodge one. Read from the source
with ast, so it holds for code no test happens to import."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TASKS = REPO / "tasks"

# the layers of tasks/, lowest first; a package may import only from lower layers (and itself)
RANK = {"runtime": 0, "modules": 1, "pruning": 1, "sweep": 1, "serve": 2, "jobs": 3, "run": 4}
RANK |= {"__main__": 5, "__init__": 5}  # the entries: `python -m tasks`, `from tasks import run`
# heavy or optional packages that only some runs need, imported where they are used
LAZY = {"matplotlib", "matplotlib.pyplot", "torch_fidelity", "torchmetrics.image.lpip"}
LAZY |= {"torch_fidelity.feature_extractor_inceptionv3", "torchmetrics.image.fid"}
# Hugging Face: transformers takes seconds to import, and only the language-model jobs need it
LAZY |= {"transformers", "tokenizers", "huggingface_hub"}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports(root: Path) -> dict[str, list[tuple[str, bool, int]]]:
    """``{module: [(imported module, at module level?, line)]}`` for every file under ``root``."""
    graph = {}
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root)
        tree = ast.parse(path.read_text(), filename=str(path))
        top_level = {id(n) for n in tree.body}
        found = []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = resolve(name, path.name == "__init__.py", node)
                # `from . import x` may import a submodule x
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                found.append((target, id(node) in top_level, node.lineno))
        graph[name] = found
    return graph


GRAPH = imports(TASKS)


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def internal(graph, module):
    return sorted({t for t, _, _ in graph[module] if t in graph and t != module})


def test_the_layout_is_the_designed_one():
    assert {package_of(m) for m in GRAPH} == set(RANK)


def test_tasks_has_no_import_cycle():
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in internal(GRAPH, module):
            if state.get(target) == 1:
                cycle = [*path[path.index(target) :], target]
                pytest.fail("import cycle: " + " → ".join(cycle))
            if target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in GRAPH:
        if module not in state:
            visit(module, [module])


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down_the_layers(module):
    source = package_of(module)
    for target in internal(GRAPH, module):
        other = package_of(target)
        if other == source:
            continue
        assert RANK[other] < RANK[source], (
            f"{module} ({source}) imports {target} ({other}): imports point run → jobs → serve → "
            "pruning/modules/sweep → runtime"
        )


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_no_function_local_imports_but_lazy_heavy_packages(module):
    local = [(t, line) for t, top, line in GRAPH[module] if not top]
    # `from x import y` records x and x.y; a lazy package is allowed with its names
    bad = [(t, line) for t, line in local if t not in LAZY and t.rsplit(".", 1)[0] not in LAZY]
    assert not bad, f"{module}: function-local imports {bad} (allowed lazily: {sorted(LAZY)})"


def test_no_module_shadows_the_standard_library():
    for path in TASKS.rglob("*.py"):
        if path.stem != "__init__" and not path.stem.startswith("__"):
            assert path.stem not in sys.stdlib_module_names, f"{path} shadows a stdlib module"


def test_the_library_imports_nothing_of_the_application():
    application = {"tasks", "datamodules", "hydra", "omegaconf", "pytorch_lightning"}
    for module, found in imports(REPO / "masking").items():
        for target, _, line in found:
            assert target.split(".")[0] not in application, (
                f"{module}:{line} imports {target}: masking/ imports torch (and triton) only"
            )
