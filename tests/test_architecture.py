"""The product's import graph: apps depend one way and no import closes a circle.

Every `import` and `from ... import` of every product module counts, including those
inside functions (a deferred import is still a dependency, only a hidden one).

    core            shared by all: the clock, the support roles, the read-only admin base,
                    the account lock; imports no app
    billing_events  Stripe in and out (ingest, the mirror, the gateway); never imports dunning
    entitlements    restrictions in force; never imports dunning
    dunning         the engine, its intake of stored events, side effects; uses both
    config          wiring
"""

import ast
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings

from billing_events import ingest
from config.celery import app as celery_app
from dunning import outbox, outbox_items

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("billing_events", "dunning", "entitlements", "config", "core")
TOOLING = ("simulation", "bench")


def product_modules(root: Path = ROOT) -> dict[str, Path]:
    modules = {}
    for package in PRODUCT:
        for path in sorted((root / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _imported_names(module: str, path: Path) -> Iterator[str]:
    """Every dotted name the module imports, `from a import b` giving `a.b` (which resolves
    to module `a.b` if there is one, else to `a`: a package's own `__init__` does not count
    as imported by `from package import submodule`)."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, base] if base else package)
            yield from (f"{base}.{alias.name}" for alias in node.names)


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The product module a dotted name lives in (`a.b.func` is in `a.b`), if any."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(root: Path = ROOT) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(module -> product modules it imports, module -> every top-level name it imports)."""
    modules = product_modules(root)
    graph: dict[str, set[str]] = {}
    raw: dict[str, set[str]] = {}
    for module, path in modules.items():
        names = set(_imported_names(module, path))
        raw[module] = names
        graph[module] = {_resolve(name, modules) for name in names} - {None, module}
    return graph, raw


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a path that ends where it starts, or None."""
    state: dict[str, str] = {}  # "open" while on the DFS path, "done" once finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def _imports_of(raw: dict[str, set[str]], packages: tuple[str, ...], forbidden: tuple[str, ...]):
    return sorted(
        f"{module} imports {name}"
        for module, names in raw.items()
        if module.split(".")[0] in packages
        for name in names
        if any(name == f or name.startswith(f + ".") for f in forbidden)
    )


def test_billing_events_and_entitlements_never_import_dunning_or_tooling():
    _, raw = import_graph()
    wrong = _imports_of(raw, ("billing_events", "entitlements"), ("dunning", *TOOLING))
    assert wrong == [], "\n".join(wrong)


def test_core_imports_no_app():
    _, raw = import_graph()
    apps = ("billing_events", "dunning", "entitlements", "config", *TOOLING)
    wrong = _imports_of(raw, ("core",), apps)
    assert wrong == [], "\n".join(wrong)


def test_the_product_has_no_import_circle():
    graph, _ = import_graph()
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_the_cycle_finder_prints_the_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_every_task_published_by_name_or_scheduled_exists():
    """Tasks published by name (so the publisher need not import them) and beat's entries
    must name real tasks: a typo would publish into the void."""
    celery_app.loader.import_default_modules()  # what a worker does first: find every task
    named = {
        ingest.PROCESS_EVENT_TASK,
        ingest.PROCESS_EVENTS_TASK,
        outbox.RUN_ITEM_TASK,
        outbox_items.DISPATCH_TASK,
        *(entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()),
    }
    assert named - set(celery_app.tasks) == set()


def test_no_product_module_imports_the_tooling():
    _, raw = import_graph()
    wrong = _imports_of(raw, PRODUCT, TOOLING)
    assert wrong == [], "\n".join(wrong)


# #15: no product file over about 300 lines. Models and migrations grow with the schema, not
# with the logic; the margin lets the few files at about 300 stand (`scripts/sizes` lists
# every file over 300, tooling included).
MAX_LINES = 320


def test_no_product_module_is_over_about_300_lines():
    too_long = sorted(
        f"{module}: {lines} lines"
        for module, path in product_modules().items()
        if path.name != "models.py" and (lines := len(path.read_text().splitlines())) > MAX_LINES
    )
    assert too_long == [], "\n".join(too_long)
