"""The library's layering (``kdmri_lib.LAYERS``): every module has a layer, imports only from its own
layer or a lower one (function-level imports included), and the import graph has no cycle."""
import ast
from pathlib import Path

import kdmri_lib

PKG = Path(kdmri_lib.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        parts = list(p.relative_to(PKG).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts:
            out[".".join(parts)] = p
    return out


def _imports(name: str, path: Path) -> set[str]:
    """The kdmri_lib modules ``name`` imports (dotted, relative to the package), anywhere in the file."""
    pkg = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = pkg[:len(pkg) - node.level + 1]
            mod = base + (node.module.split(".") if node.module else [])
            if node.module is None:
                found.update(".".join(mod + [a.name]) for a in node.names)
            else:
                found.add(".".join(mod))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kdmri_lib"):
            mod = node.module[len("kdmri_lib."):]
            # ``from kdmri_lib.pkg import name``: the module pkg.name when it is one, else pkg
            found.update(".".join(p for p in (mod, a.name) if p) for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name[len("kdmri_lib."):] for a in node.names if a.name.startswith("kdmri_lib."))
    return found


def _layer_of() -> dict[str, int]:
    return {m: i for i, (_, mods) in enumerate(kdmri_lib.LAYERS) for m in mods}


def _layer(name: str, layer_of: dict[str, int]):
    """The layer of a module: its own entry, else its package's (the longest listed prefix)."""
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        if ".".join(parts[:k]) in layer_of:
            return layer_of[".".join(parts[:k])]
    return None


def _resolve(target: str, mods: dict[str, Path]):
    """An imported name as a module of the package (``from .x import y``: ``x.y`` if that is a module,
    else ``x``); None for the package root (``__version__``)."""
    while target and target not in mods:
        target = target.rpartition(".")[0]
    return target or None


def test_every_module_has_a_layer():
    layer_of = _layer_of()
    missing = [m for m in _modules() if _layer(m, layer_of) is None]
    assert not missing, f"modules without a layer in kdmri_lib.LAYERS: {missing}"


def test_no_module_imports_from_a_higher_layer():
    mods, layer_of = _modules(), _layer_of()
    bad = []
    for name, path in mods.items():
        for target in _imports(name, path):
            t = _resolve(target, mods)
            if t is not None and _layer(t, layer_of) > _layer(name, layer_of):
                bad.append(f"{name} ({kdmri_lib.LAYERS[_layer(name, layer_of)][0]}) imports {t} "
                           f"({kdmri_lib.LAYERS[_layer(t, layer_of)][0]})")
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_the_import_graph_has_no_cycle():
    mods = _modules()
    graph = {n: {t for t in (_resolve(x, mods) for x in _imports(n, p)) if t and t != n} for n, p in mods.items()}
    # a package imports its own modules (re-exports); that is not a cycle between layers of code
    graph = {n: {t for t in ts if not t.startswith(n + ".")} for n, ts in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for t in sorted(graph.get(n, ())):
            if state.get(t) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(t):] + [t]))
            if t not in state:
                visit(t)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n)


def test_modules_and_functions_stay_small():
    """No module over ~500 lines, no function over ~80 (docstrings included)."""
    big, long = [], []
    for name, path in _modules().items():
        src = path.read_text()
        if src.count("\n") > 530:
            big.append(f"{name}: {src.count(chr(10))} lines")
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 85:
                long.append(f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not big and not long, "\n".join(big + long)
