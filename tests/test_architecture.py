"""The package's shape (docs/architecture.md): folders by role, imports one way, no import
circle, a small root, short functions. Read from the source, function-local imports included."""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "beam_ingest")

# Highest first: a module imports its own folder and the levels below its own, never a
# folder beside it (pipeline/ never imports ops/, hierarchy/ never inputs/), never one above.
LEVELS = [
    ("cli",),  # cli.py and __main__.py
    ("launch",),
    ("pipeline", "ops", "synthetic"),
    ("l2cache",),
    ("outputs",),
    ("inputs", "hierarchy"),
    ("store",),
]
SHARED = "root"  # the small modules of the package root: importable from anywhere
MAX_ROOT_MODULES = 12
MAX_FUNCTION_LINES = 100


def modules():
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                found[dotted.removesuffix(".__init__")] = path
    return found


def imports(path, dotted, known):
    """The package's modules that `path` imports, anywhere in it."""
    tree = ast.parse(open(path).read())
    package = dotted if path.endswith("__init__.py") else dotted.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names = [f"{base}.{alias.name}" for alias in node.names]
            out |= {n for n in names if n in known} or ({base} if base in known else set())
        elif isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names if alias.name in known}
    return out - {dotted}


def folder(dotted):
    """The folder a module belongs to for the rule: its package's, "cli", or the shared root."""
    parts = dotted.split(".")
    if len(parts) == 2 and parts[1] in ("cli", "__main__"):
        return "cli"
    if len(parts) == 1 or (len(parts) == 2 and not os.path.isdir(os.path.join(PACKAGE, parts[1]))):
        return SHARED
    return parts[1]


def level(name):
    if name == SHARED:
        return len(LEVELS)
    return next(i for i, names in enumerate(LEVELS) if name in names)


def graph():
    known = modules()
    return {m: imports(path, m, known) for m, path in known.items()}


def test_every_folder_has_a_level():
    for dotted in modules():
        level(folder(dotted))  # StopIteration names a folder the rule does not know


def test_imports_run_one_way():
    wrong = []
    for importer, targets in graph().items():
        here = folder(importer)
        for target in targets:
            there = folder(target)
            if there == here or level(there) > level(here):
                continue
            wrong.append(f"{importer} imports {target} ({here}/ may import only below it, not {there}/)")
    assert not wrong, "\n".join(wrong)


def test_no_import_circle():
    edges = graph()
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(node):  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            members = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                members.append(member)
                if member == node:
                    break
            if len(members) > 1:
                circles.append(sorted(members))

    for node in edges:
        if node not in index:
            visit(node)
    assert not circles, circles


def test_the_package_root_stays_small():
    root = [n for n in os.listdir(PACKAGE) if n.endswith(".py")]
    assert len(root) <= MAX_ROOT_MODULES, sorted(root)


def test_no_function_is_longer_than_a_screenful():
    long = []
    for dotted, path in modules().items():
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{dotted}.{node.name}: {lines} lines")
    assert not long, long
