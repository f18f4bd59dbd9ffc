"""The package's import graph: no circles between its modules, and the models stand alone.

The graph is read from the source with ``ast``: an edge A -> B for every ``import`` or
``from ... import`` of a digitlab module that A runs at import time (module level, including
``if``/``try`` blocks; imports inside functions and under ``TYPE_CHECKING`` are lazy and do not count).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import digitlab

PACKAGE_DIR = Path(digitlab.__file__).parent


def module_name(path: Path) -> str:
    parts = ["digitlab", *path.relative_to(PACKAGE_DIR).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def _module_level(body: list[ast.stmt]):
    """Statements that run at import time: the body, and the bodies of its if/try/with blocks."""
    for node in body:
        if isinstance(node, ast.If):
            test = node.test
            if (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
                isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
            ):
                yield from _module_level(node.orelse)
                continue
            yield from _module_level(node.body)
            yield from _module_level(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *[h.body for h in node.handlers]):
                yield from _module_level(block)
        elif isinstance(node, ast.With):
            yield from _module_level(node.body)
        else:
            yield node


def internal_imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The digitlab modules that importing ``name`` imports directly."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in _module_level(ast.parse(path.read_text(), str(path)).body):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for a in node.names:
                sub = f"{target}.{a.name}"
                if sub in known:  # `from digitlab.models import cnn`: the submodule itself
                    out.add(sub)
                elif target in known:
                    out.add(target)
    out.discard(name)
    return out


def import_graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: internal_imports(name, path, set(mods)) for name, path in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_graph_sees_the_package():
    graph = import_graph()
    assert "digitlab.models.registry" in graph and "digitlab.cli" in graph
    assert "digitlab.models.cnn" in graph["digitlab.models"]  # the package imports each model file
    assert "digitlab.models.layers" in graph["digitlab.models.cnn"]


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circles_inside_the_package():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_no_model_file_imports_another():
    graph = import_graph()
    model_files = {m for m in graph if m.startswith("digitlab.models.")} - {
        "digitlab.models.registry",
        "digitlab.models.layers",
    }
    for m in sorted(model_files):
        assert not graph[m] & model_files, f"{m} imports {graph[m] & model_files}"
    assert not graph["digitlab.models.registry"] & model_files  # the registry imports no model file


def test_importing_the_models_pulls_in_no_cli_or_web_module():
    code = (
        "import sys, digitlab.models; "
        "print(','.join(sorted(m for m in sys.modules if m.startswith(('digitlab.cli', 'digitlab.web')))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def test_the_models_and_onnx_modules_import_at_the_top():
    """No hidden dependencies: every digitlab import in these modules is at module level."""
    for name, path in modules().items():
        if not name.startswith(("digitlab.models", "digitlab.inference.onnx", "digitlab.evaluate.inspect")):
            continue
        tree = ast.parse(path.read_text())
        top = set(map(id, _module_level(tree.body)))
        hidden = [
            node.lineno
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("digitlab") and id(node) not in top
        ]
        assert not hidden, f"{name} imports digitlab modules inside functions at lines {hidden}"


def test_the_inference_and_web_modules_import_no_torch():
    """An ONNX deployment has no torch: the predictor, the preprocessing and the web app load without it
    (torch comes in only when a PyTorch checkpoint is loaded). tests/test_onnx.py runs one end to end."""
    code = (
        "import sys, digitlab.inference, digitlab.inference.predictor, digitlab.web.app, digitlab.web.pool; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
