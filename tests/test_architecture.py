"""The shape of the code: layers import only downwards, no import cycles, one runner contract."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import segbench

PACKAGE = Path(segbench.__file__).parent

#: Bottom to top. A module may import from its own layer and the layers below, never above; a name
#: is a package (every module under it) or, for the root ``segbench``, that one module.
#: ``segbench.measure`` never imports ``segbench.runtimes``: the session types, faults and ``quiet``
#: that both need live in measure/ (``measure.session``), and runtimes import them from there.
LAYERS = (
    (
        "contract",
        (
            "segbench._version",
            "segbench.errors",
            "segbench.checks",
            "segbench.writing",
            "segbench.foreign",
            "segbench.hookspecs",
            "segbench.registry",
            # the composition root: it names segbench.models, .data and .runtimes as strings
            # (imported when a builder runs), the one upward dependency, invisible to the graph
            "segbench.builtin",
            "segbench.plugins",
            "segbench.inventory",
        ),
    ),
    ("models and data", ("segbench.models", "segbench.data")),
    ("measurement primitives", ("segbench.measure",)),
    ("runtimes", ("segbench.runtimes",)),
    ("rows", ("segbench.rows",)),
    ("runners", ("segbench.runners",)),
    ("output", ("segbench.output",)),
    ("cli", ("segbench.cli", "segbench.__main__", "segbench")),
)
Layers = tuple[tuple[str, tuple[str, ...]], ...]


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str, layers: Layers = LAYERS) -> int | None:
    """The index of the most specific layer name that covers ``module``; None when none does."""
    root = layers[-1][1][-1].split(".")[0]
    matches = [
        (len(name), i)
        for i, (_, names) in enumerate(layers)
        for name in names
        if module == name or (name != root and module.startswith(name + "."))
    ]
    return max(matches)[1] if matches else None


def imports_of(path: Path, module: str, modules: set[str]) -> set[str]:
    """Every module of ``modules``' package that ``path`` (module ``module``) imports, at the top or inside
    functions, absolute or relative (``from . import x``, ``from ..y import z``), resolved to modules."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                anchor = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{anchor}.{base}" if base else anchor
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in modules else base)
    top = module.split(".")[0]
    return {m for m in found if m == top or m.startswith(top + ".")}


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports, for every ``.py`` file under ``root``."""
    paths = {module_name(p, root): p for p in root.rglob("*.py")}
    return {module: imports_of(path, module, set(paths)) for module, path in paths.items()}


def upward_imports(graph: dict[str, set[str]], layers: Layers = LAYERS) -> list[str]:
    """Every import from a lower layer into a higher one, as ``a (layer) imports b (layer)``."""
    return [
        f"{module} ({layers[low][0]}) imports {target} ({layers[high][0]})"
        for module, targets in sorted(graph.items())
        for target in sorted(targets)
        if (low := layer_of(module, layers)) is not None
        and (high := layer_of(target, layers)) is not None
        and high > low
    ]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles a depth-first search meets, each as the path back to where it closed."""
    state: dict[str, str] = {}
    found = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            if target == node:
                continue
            if state.get(target) == "open":
                found.append([*stack[stack.index(target) :], target] if target in stack else [node, target])
            elif target not in state:
                visit(target, [*stack, target])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The module graph one level up: ``segbench.measure.x -> segbench.runtimes.y`` becomes an edge
    between the packages ``segbench.measure`` and ``segbench.runtimes`` (a top-level module is its own)."""

    def package(module: str) -> str:
        return ".".join(module.split(".")[:2])

    packages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        packages.setdefault(package(module), set()).update(package(t) for t in targets)
    return {p: targets - {p} for p, targets in packages.items()}


GRAPH = import_graph(PACKAGE)


def test_every_module_has_a_layer():
    assert [m for m in sorted(GRAPH) if layer_of(m) is None] == []
    assert layer_of("segbench.unlisted") is None  # the root names itself only, not everything under it


def test_layers_import_only_downwards():
    assert upward_imports(GRAPH) == []


def test_measurement_primitives_import_no_rows_runners_or_output():
    for module, targets in GRAPH.items():
        if module.startswith(("segbench.measure", "segbench.runtimes")):
            assert not {t for t in targets if t.split(".")[1] in ("rows", "runners", "output", "cli")}, module


def test_no_import_cycles():
    """Depth-first search over the whole graph, imports inside functions included."""
    assert cycles(GRAPH) == []


def test_no_import_cycles_between_packages():
    """Modules may form no cycle while their packages do (measure -> runtimes -> measure): packages too."""
    assert cycles(package_graph(GRAPH)) == []


def _fake_package(tmp_path: Path, sources: dict[str, str]) -> Path:
    """``fake/`` with two subpackages, ``low`` (modules a, c) and ``high`` (module b); ``sources``
    (``{"low/a": "..."}``) give modules their text or add modules, every other file is empty."""
    names = ("__init__", "low/__init__", "low/a", "low/c", "high/__init__", "high/b")
    files = {f"fake/{name}.py": source for name, source in {**dict.fromkeys(names, ""), **sources}.items()}
    for name, source in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(source)
    return tmp_path / "fake"


def test_a_package_cycle_is_reported_even_without_a_module_cycle(tmp_path: Path):
    """Two packages of one layer (as measure/ and runtimes/ were): low.a -> high.b -> low.c, no module cycle."""
    root = _fake_package(
        tmp_path, {"low/a": "def f():\n    from fake.high import b\n", "high/b": "from fake.low.c import x\n"}
    )
    graph = import_graph(root)
    layers = (("primitives", ("fake.low", "fake.high")), ("top", ("fake",)))
    assert graph["fake.low.a"] == {"fake.high.b"} and graph["fake.high.b"] == {"fake.low.c"}
    assert cycles(graph) == [] and upward_imports(graph, layers) == []
    assert cycles(package_graph(graph)) == [["fake.high", "fake.low", "fake.high"]]


def test_a_relative_upward_import_is_resolved_and_reported(tmp_path: Path):
    root = _fake_package(
        tmp_path,
        {"low/__init__": "from . import c\n", "low/a": "from ..high import b\nfrom .c import x\n", "extra": ""},
    )
    graph = import_graph(root)
    layers = (("low", ("fake.low",)), ("high", ("fake.high",)), ("top", ("fake",)))
    assert graph["fake.low"] == {"fake.low.c"} and graph["fake.low.a"] == {"fake.high.b", "fake.low.c"}
    assert upward_imports(graph, layers) == ["fake.low.a (low) imports fake.high.b (high)"]
    assert [m for m in sorted(graph) if layer_of(m, layers) is None] == ["fake.extra"]


def test_the_graph_sees_imports_inside_functions():
    """The cycle test would be blind without this: runners import torch-heavy modules lazily."""
    assert "segbench.measure.latency" in GRAPH["segbench.runners.latency"]
    assert "segbench.plugins" in GRAPH["segbench"]


#: The runner each measuring command calls: cli module -> runner module, whose runner is named like it.
COMMAND_RUNNERS = {
    "flops": "count",
    "latency": "latency",
    "blocks": "blocks",
    "train": "train",
    "run": "run",
    "load": "load",
    "profile": "profile",
}


@pytest.mark.parametrize("command", sorted(COMMAND_RUNNERS))
def test_every_command_calls_its_runner(command):
    """So the contract below is checked on the functions the product uses: a measuring command calls its
    runner and imports nothing else from a runner module but configs and the K^2 study's default pair."""
    runner = COMMAND_RUNNERS[command]
    tree = ast.parse((PACKAGE / "cli" / f"{command}.py").read_text())
    imported = {
        (node.module.rsplit(".", 1)[1], alias.name)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("segbench.runners.")
        for alias in node.names
    }
    called = {node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    measuring = {name for module, name in imported if module in COMMAND_RUNNERS.values()}
    assert runner in called and (runner, runner) in imported
    assert {name for name in measuring if not name.endswith("Config")} - {"default_specs"} == {runner}


@pytest.mark.parametrize("name", sorted(set(COMMAND_RUNNERS.values())))
def test_every_runner_has_the_same_shape(name):
    """``runner(specs, config, context=ALONE) -> Iterator[row]``, with its config a dataclass of the same
    module; a runner may return rows that also describe its settings (`segbench.runners.cells.Described`)."""
    import importlib
    from collections.abc import Iterator

    from segbench.runners import cells

    module = importlib.import_module(f"segbench.runners.{name}")
    signature = inspect.signature(getattr(module, name))
    assert list(signature.parameters) == ["specs", "config", "context"]
    assert signature.parameters["context"].default is cells.ALONE
    config = signature.parameters["config"].annotation
    assert config.endswith("Config") and hasattr(module, config)
    returned = str(signature.return_annotation)
    assert "Iterator[Row]" in returned or issubclass(getattr(cells, returned), Iterator)


def test_cli_modules_hold_no_measurement():
    """The CLI parses and renders: it never calls a measurement primitive itself."""
    for module, targets in GRAPH.items():
        if module.startswith("segbench.cli"):
            primitives = {t for t in targets if t.startswith(("segbench.measure.", "segbench.runtimes."))} - {
                "segbench.measure.session",  # the Variant value type, built from --precision and switches
                "segbench.measure.protocols",  # the EvalProtocol value type, built from --protocol and its options
                "segbench.measure.recipe",  # constants quoted in help texts and footnotes
                "segbench.measure.analytic",  # the counting convention quoted in a footnote
            }
            assert primitives == set(), module


#: The longest a function may be, def line to last line, docstring included, decorators excluded.
MAX_FUNCTION_LINES = 60


def _is_command(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Decorated ``@command(...)`` or ``@app.command(...)``: a Typer signature, one line per option."""
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if (isinstance(target, ast.Name) and target.id == "command") or (
            isinstance(target, ast.Attribute) and target.attr == "command"
        ):
            return True
    return False


def long_functions(source: str, name: str, commands_allowed: bool) -> list[str]:
    """``name:line function (N lines)`` for each function of ``source`` over `MAX_FUNCTION_LINES`."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        length = (node.end_lineno or node.lineno) - node.lineno + 1
        if length > MAX_FUNCTION_LINES and not (commands_allowed and _is_command(node)):
            found.append(f"{name}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_is_longer_than_sixty_lines():
    """Typer command signatures in cli/ are exempt: their options are one parameter each."""
    found = [
        hit
        for path in sorted(PACKAGE.rglob("*.py"))
        for hit in long_functions(path.read_text(), str(path.relative_to(PACKAGE)), path.parent.name == "cli")
    ]
    assert found == []


def test_a_long_function_is_reported_and_only_cli_commands_are_exempt():
    def source(decorator: str, body_lines: int) -> str:
        body = "".join(f"    x{i} = {i}\n" for i in range(body_lines))
        return f"{decorator}def f():\n    '''Doc.'''\n{body}"

    assert long_functions(source("", 58), "m.py", commands_allowed=False) == []  # 60 lines: the limit
    assert long_functions(source("", 59), "m.py", commands_allowed=False) == ["m.py:1 f (61 lines)"]
    # decorators do not count; a command is exempt only in cli/, a nested function is checked too
    assert long_functions(source("@command('x')\n", 59), "cli.py", commands_allowed=True) == []
    assert long_functions(source("@app.command()\n", 59), "cli.py", commands_allowed=True) == []
    assert long_functions(source("@command('x')\n", 59), "m.py", commands_allowed=False) == ["m.py:2 f (61 lines)"]
    nested = "def outer():\n" + "".join("    " + line + "\n" for line in source("", 59).splitlines())
    assert long_functions(nested, "m.py", commands_allowed=False) == ["m.py:1 outer (62 lines)", "m.py:2 f (61 lines)"]
