"""The package's layers, read from its imports with ast: each layer imports only the layers
below it, there is no import circle (imports inside functions count too), the output layer
never talks to gdb, and the model layers never print."""
from __future__ import annotations

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "gdb_kprobe"

# bottom to top; a module may import its own layer and the layers before it
LAYERS = ["base", "arch", "target", "kernel", "analysis", "engine", "ui", "commands",
          "integration", "plugin"]
BASE_MODULES = {"gdb_kprobe", "gdb_kprobe.errors", "gdb_kprobe.options"}


def module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, pathlib.Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> str:
    if module in BASE_MODULES:
        return "base"
    return module.split(".")[1]


def imports_of(path: pathlib.Path, known: dict[str, pathlib.Path]) -> list[tuple[str, int]]:
    """Every gdb_kprobe module `path` imports, anywhere in the file, with its line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from gdb_kprobe.target import memory`: the submodule if there is one
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known
                     else node.module for alias in node.names]
        else:
            continue
        found += [(name, node.lineno) for name in names if name.split(".")[0] == "gdb_kprobe"]
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: {imported for imported, _ in imports_of(path, known)} - {name}
            for name, path in known.items()}


def test_every_module_is_in_a_layer():
    unknown = {name for name in modules() if layer_of(name) not in LAYERS}
    assert not unknown, f"modules outside the layers {LAYERS}: {sorted(unknown)}"


def test_layers_import_only_downwards():
    known = modules()
    wrong = []
    for name, path in known.items():
        rank = LAYERS.index(layer_of(name))
        for imported, line in imports_of(path, known):
            if LAYERS.index(layer_of(imported)) > rank:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {layer_of(name)} "
                             f"imports {imported} ({layer_of(imported)}, a layer above)")
    assert not wrong, "\n".join(wrong)


def test_no_import_circle():
    edges = graph()
    circles = []
    state: dict[str, int] = {}            # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for following in sorted(edges.get(name, ())):
            if state.get(following) == 1:
                circles.append(" -> ".join(path[path.index(following):] + [following]))
            elif following not in state:
                visit(following)
        path.pop()
        state[name] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name)
    assert not circles, "import circles:\n" + "\n".join(circles)


def imports_gdb(path: pathlib.Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            continue
        if any(name == "gdb" or name.startswith("gdb.") for name in names):
            return True
    return False


def test_output_layer_does_not_talk_to_gdb():
    talking = [name for name, path in modules().items()
               if layer_of(name) == "ui" and imports_gdb(path)]
    assert not talking, f"ui modules importing gdb: {talking}"


def test_every_import_names_a_module():
    """`from gdb_kprobe.kernel import anatomy` must name a module, so the checks above see
    the real edge (the package __init__ files export nothing)."""
    known = modules()
    unresolved = []
    for name, path in known.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and \
                    node.module.split(".")[0] == "gdb_kprobe" and node.module in known and \
                    known[node.module].name == "__init__.py" and node.module != "gdb_kprobe.arch":
                unresolved += [f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: "
                               f"{node.module}.{alias.name}" for alias in node.names
                               if f"{node.module}.{alias.name}" not in known]
            elif isinstance(node, ast.ImportFrom) and node.module and \
                    node.module.split(".")[0] == "gdb_kprobe" and node.module not in known:
                unresolved.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {node.module}")
    assert not unresolved, "imports of no module:\n" + "\n".join(unresolved)


def test_model_layers_do_not_print():
    printing = []
    for name, path in modules().items():
        if layer_of(name) not in ("kernel", "analysis", "target", "arch"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                called = ast.unparse(node.func)
                if called in ("print", "gdb.write"):
                    printing.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: {called}")
    assert not printing, "\n".join(printing)


MAX_MODULE_LINES = 350
MAX_FUNCTION_LINES = 60


def test_modules_and_functions_stay_small():
    """A module a newcomer can read in one sitting, a function that fits a screen."""
    too_long = []
    for name, path in modules().items():
        text = path.read_text()
        if text.count("\n") > MAX_MODULE_LINES:
            too_long.append(f"{name}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}.{node.name}: {length} lines")
    assert not too_long, "\n".join(too_long)
