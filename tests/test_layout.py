"""The shape of the house: no import cycles (lazy imports included), no method named in shared modules' code,
and every method a package that declares the whole contract."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from avmodels.methods import METHODS, get_method
from avmodels.methods.base import Method

ROOT = Path(__file__).resolve().parents[1]
SHARED = ["avmodels/cli.py", "avmodels/data", "avmodels/sampling.py", "avmodels/evaluation.py", "avmodels/training",
          "avmodels/checkpoints.py", "avmodels/views.py", "avmodels/pictures.py", "avmodels/losses.py",
          "avmodels/metrics", "avmodels/methods/__init__.py", "avmodels/methods/base.py"]


def our_modules() -> dict[str, Path]:
    modules = {}
    for package in ("avprep", "avmodels"):
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def import_graph() -> dict[str, set[str]]:
    """module -> the modules of ours it imports anywhere in its code (inside functions too)."""
    modules = our_modules()

    def ours(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in modules.items():
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {ours(alias.name) for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                targets |= {ours(f"{node.module}.{alias.name}") for alias in node.names}
        graph[name] = targets - {None, name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter = counter + 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter = counter + 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_of_ours_imports_itself_back_even_lazily():
    assert cycles(import_graph()) == []


def test_avprep_never_imports_torch_or_avmodels():
    for name, path in our_modules().items():
        if name.startswith("avprep"):
            imported = {alias.name for node in ast.walk(ast.parse(path.read_text()))
                        if isinstance(node, ast.Import) for alias in node.names}
            imported |= {node.module for node in ast.walk(ast.parse(path.read_text()))
                         if isinstance(node, ast.ImportFrom) and node.module}
            assert not {i for i in imported if i.split(".")[0] in ("torch", "avmodels", "webdataset")}, name


def code_words(path: Path) -> set[str]:
    """Identifiers and string constants of a module's code: its docstrings and comments left out."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    words = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            words.add(node.value.lower())
        elif isinstance(node, ast.Name):
            words.add(node.id.lower())
        elif isinstance(node, ast.Attribute):
            words.add(node.attr.lower())
    return words


@pytest.mark.parametrize("shared", SHARED)
def test_shared_modules_name_no_method_in_their_code(shared):
    paths = [ROOT / shared] if shared.endswith(".py") else sorted((ROOT / shared).rglob("*.py"))
    for path in paths:
        if path.name == "__init__.py" and path.parent.name == "methods":
            continue  # the registry: one line per method
        named = {word for word in code_words(path) for method in METHODS if method in word}
        assert not named, f"{path.relative_to(ROOT)} names {sorted(named)}"


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_is_a_package_declaring_the_whole_contract(name):
    method = get_method(name)
    assert issubclass(method, Method) and method.name == name
    assert (ROOT / "avmodels" / "methods" / name / "__init__.py").is_file()
    assert (ROOT / "pipelines" / f"{name}.toml").is_file() and (ROOT / "docs" / "methods" / f"{name}.md").is_file()
    assert set(method.loss_terms) == set(method.stages) and method.outputs
    assert callable(method.view) and set(method.inputs) | set(method.drivers) <= {"audio", "reference", "driving", "lr"}
