"""The architecture as a contract: layers, no cycles, imports at the top, small modules.

Run it (well under a second; it reads the source with `ast`, it never imports the product):

    .venv/bin/python -m pytest -p no:cacheprovider -q tests/unit/test_architecture.py

What it checks, over every `.py` under `config/`, `core/`, `worker/` and `web/`
(`tests/`, `bench/`, `migrations/` and `scripts/` are outside the contract):

1. **Layers** `config` → `core` → `worker` → `web`: a module imports only from its own
   layer or the layers to its left, never upward (`core` never imports `worker` or
   `web`; `worker` never imports `web`). Every import counts, also one inside a
   function or under `if TYPE_CHECKING:`.
2. **No import cycles** among our modules. `from pkg import submodule` is an edge to
   the submodule; `from pkg import name` (a name defined in `pkg/__init__.py`) is an
   edge to the package. A lazy import is still an edge: it hides a cycle, it does not
   break it. Importing a submodule also runs its packages' `__init__.py` (Python does
   that first), so a package whose `__init__` imports something that imports back
   into the importer is a cycle too.
3. **Imports of our own modules at module top** (the module body, including
   `if TYPE_CHECKING:` and try/except there). One inside a function or class is
   allowed only under a comment starting `# lazy import:` that gives the measured
   reason, a number with a unit (ms, s, KB, MB, MiB), e.g.
   `# lazy import: pymupdf costs 38 MB RSS in the pixel process`. The comment sits on
   the line(s) right above the import (a run of imports may share one comment).
4. **No module over 500 lines** (physical lines): split it by concept.
5. **docs/ARCHITECTURE.md stays true**: its "Layers" section holds a fenced block
   equal to the contract below; it names every package (`web/api/`, …); every
   `path/to/file.py` or `folder/` it mentions exists; every dotted name it mentions
   (`worker.sync.engine.request_sync`) is a module, or a name defined at the top of one.

There is no list of tolerated violations: the ones the tree had when this test
was written were fixed (it carried them as a baseline that could only shrink,
until it was empty). A failure names each violation, where it is, and what to do.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "ARCHITECTURE.md"
THIS = "tests/unit/test_architecture.py"

# The contract: left to right, each layer may import itself and the layers to its left.
LAYERS = ("config", "core", "worker", "web")
MAX_LINES = 500

LAZY_MARK = "# lazy import:"
# A measured figure: a number and a unit (38 MB, 1.5 MiB, 120 ms, 0.4 s, 900 KB).
FIGURE = re.compile(r"\d+(?:\.\d+)?\s*(?:ms|s|KB|KiB|MB|MiB|GB|GiB)\b")


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Edge:
    """One import of one of our modules by another."""

    source: str
    target: str
    path: str
    line: int
    scope: str | None  # "func" or "Class.method" when not at module top
    lazy_reason: bool  # a `# lazy import:` comment with a figure sits above it
    through: str | None = None  # set on a package run because this submodule was imported


def find_modules(root: Path) -> dict[str, Path]:
    """Map each dotted module name in the four layers to its file."""
    modules: dict[str, Path] = {}
    for layer in LAYERS:
        for path in sorted((root / layer).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of the dotted `name` that is one of our modules."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def package_of(module: str, path: Path) -> str:
    """The package a relative import in `module` starts from."""
    if path.name == "__init__.py":
        return module
    return module.rpartition(".")[0]


def import_targets(
    node: ast.Import | ast.ImportFrom, module: str, path: Path, modules: dict[str, Path]
) -> set[str]:
    """Our modules one import statement binds (the decided edge rule)."""
    if isinstance(node, ast.Import):
        found = {resolve(alias.name, modules) for alias in node.names}
        return {name for name in found if name}
    base = node.module or ""
    if node.level:
        package = package_of(module, path).split(".")
        if node.level > 1:
            package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, base] if base else package)
    targets: set[str] = set()
    for alias in node.names:
        submodule = f"{base}.{alias.name}"
        if submodule in modules:
            targets.add(submodule)
        elif (owner := resolve(base, modules)) is not None:
            targets.add(owner)
    return targets


def has_lazy_reason(lines: list[str], lineno: int, import_lines: set[int]) -> bool:
    """True if a `# lazy import:` comment with a measured figure sits right above line `lineno`.

    Imports directly above (a run under one comment: `import_lines` are the lines any
    import statement spans, 1-based) and the comment's continuation lines are skipped
    over; the figure may be anywhere in the comment.
    """
    index = lineno - 2  # the line above, 0-based
    while index >= 0 and index + 1 in import_lines:
        index -= 1
    comment: list[str] = []
    while index >= 0 and lines[index].lstrip().startswith("#"):
        comment.insert(0, lines[index].strip())
        if lines[index].strip().startswith(LAZY_MARK):
            return bool(FIGURE.search(" ".join(comment)))
        index -= 1
    return False


def read_edges(module: str, path: Path, modules: dict[str, Path], root: Path) -> Iterator[Edge]:
    """Every import of our modules in one file, with where it sits."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    rel = path.relative_to(root).as_posix()
    parsed = ast.parse(source, filename=rel)
    import_lines = {
        line
        for node in ast.walk(parsed)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for line in range(node.lineno, (node.end_lineno or node.lineno) + 1)
    }

    def visit(node: ast.AST, scope: list[str]) -> Iterator[Edge]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                yield from visit(child, [*scope, child.name])
            elif isinstance(child, ast.Import | ast.ImportFrom):
                for target in sorted(import_targets(child, module, path, modules)):
                    if target == module:
                        continue
                    yield Edge(
                        module,
                        target,
                        rel,
                        child.lineno,
                        ".".join(scope) or None,
                        bool(scope) and has_lazy_reason(lines, child.lineno, import_lines),
                    )
            else:
                yield from visit(child, scope)

    yield from visit(parsed, [])


@dataclass
class Tree:
    """The product's import graph as the source states it."""

    modules: dict[str, Path]
    edges: list[Edge]

    @classmethod
    def read(cls, root: Path) -> Tree:
        modules = find_modules(root)
        edges = [
            edge for name, path in modules.items() for edge in read_edges(name, path, modules, root)
        ]
        return cls(modules, edges)

    def runtime_edges(self) -> list[Edge]:
        """The edges, plus the package `__init__`s Python runs to import a submodule.

        Importing `web.api.common` runs `web/api/__init__.py` first; when that imports
        a module that imports the importer back, the loop is real at runtime (an
        ImportError, depending on which module is imported first). A module's own
        packages are left out: they are always run before it, by design.
        """
        implied = []
        for edge in self.edges:
            own = set(ancestors(edge.source))
            for package in ancestors(edge.target):
                if package in self.modules and package not in own and package != edge.source:
                    implied.append(
                        Edge(
                            edge.source,
                            package,
                            edge.path,
                            edge.line,
                            edge.scope,
                            edge.lazy_reason,
                            through=edge.target,
                        )
                    )
        return self.edges + implied

    def graph(self) -> dict[str, set[str]]:
        graph: dict[str, set[str]] = {name: set() for name in self.modules}
        for edge in self.runtime_edges():
            graph[edge.source].add(edge.target)
        return graph


def ancestors(module: str) -> list[str]:
    """The packages above a dotted module name: `web.api.common` → `web`, `web.api`."""
    parts = module.split(".")
    return [".".join(parts[:end]) for end in range(1, len(parts))]


# --------------------------------------------------------------------------- the rules


def layer_of(module: str) -> int:
    return LAYERS.index(module.split(".", maxsplit=1)[0])


def upward_imports(tree: Tree) -> dict[str, str]:
    """`upward: a → b`: where, for each import of a layer to the right."""
    found: dict[str, str] = {}
    for edge in tree.edges:
        if layer_of(edge.target) > layer_of(edge.source):
            found.setdefault(f"upward: {edge.source} → {edge.target}", f"{edge.path}:{edge.line}")
    return found


def strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's components with more than one module (each one is a cycle or several)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return components


def path_back(graph: dict[str, set[str]], start: str, goal: str, within: set[str]) -> list[str]:
    """The shortest import chain from `start` to `goal` inside one component."""
    previous: dict[str, str] = {}
    frontier = [start]
    seen = {start}
    while frontier:
        nxt_frontier = []
        for node in frontier:
            for nxt in sorted(graph[node] & within):
                if nxt in seen:
                    continue
                previous[nxt] = node
                if nxt == goal:
                    chain = [goal]
                    while chain[-1] != start:
                        chain.append(previous[chain[-1]])
                    return chain[::-1]
                seen.add(nxt)
                nxt_frontier.append(nxt)
        frontier = nxt_frontier
    return [start, goal]


def cycle_edges(tree: Tree) -> dict[str, str]:
    """`cycle: a → b`: the loop it closes, for each import inside a cycle."""
    graph = tree.graph()
    found: dict[str, str] = {}
    for component in strongly_connected(graph):
        for edge in tree.runtime_edges():
            if edge.source in component and edge.target in component:
                key = f"cycle: {edge.source} → {edge.target}"
                if key not in found:
                    loop = path_back(graph, edge.target, edge.source, component)
                    runs = f" (importing {edge.through} runs it)" if edge.through else ""
                    found[key] = f"{edge.path}:{edge.line}{runs}; loop: " + " → ".join(
                        [edge.source, *loop]
                    )
    return found


def inner_imports(tree: Tree) -> dict[str, str]:
    """`inner import: a:func → b`: where, for each import not at module top."""
    found: dict[str, str] = {}
    for edge in tree.edges:
        if edge.scope and not edge.lazy_reason:
            found.setdefault(
                f"inner import: {edge.source}:{edge.scope} → {edge.target}",
                f"{edge.path}:{edge.line}",
            )
    return found


def long_modules(tree: Tree, root: Path) -> dict[str, str]:
    """`too long: path`: its line count, for each module over MAX_LINES."""
    found: dict[str, str] = {}
    for path in tree.modules.values():
        count = len(path.read_text(encoding="utf-8").splitlines())
        if count > MAX_LINES:
            found[f"too long: {path.relative_to(root).as_posix()}"] = f"{count} lines"
    return found


HOW_TO_FIX = {
    "upward": (
        "A module may import only its own layer or the layers to its left "
        f"({' → '.join(LAYERS)}). Move what both sides need down into the lower layer, "
        'in a small module named for what it does (see docs/ARCHITECTURE.md, "Layers"); '
        "where web or worker only starts work, queue it by job name through "
        "worker/queueing.py instead of importing the job's module."
    ),
    "cycle": (
        "Break the loop: move the name both modules need into the module that owns the "
        "concept, or into a small module of its own that imports neither. Moving the "
        "import into a function does not break it (a lazy import is still an edge). "
        'Where the loop runs through a package ("importing X runs it"), keep that '
        "package's __init__.py from importing the modules that import back into it."
    ),
    "inner import": (
        "Move the import to the top of the module. Only if it must stay lazy (a heavy "
        "dependency kept out of a process), put a comment on the line above it: "
        "`# lazy import: <why>, <measured figure>` e.g. "
        "`# lazy import: pymupdf costs 38 MB RSS in the pixel process`."
    ),
    "too long": (
        f"Split the module by concept (each new module under {MAX_LINES} lines, named for "
        "what it does) and update the callers to import from the new modules."
    ),
}


def assert_none(kind: str, found: dict[str, str]) -> None:
    """Fail naming each violation of one rule, where it is, and how to fix it."""
    assert not found, (
        f"{len(found)} {kind} violation(s) of the architecture ({THIS}):\n"
        + "\n".join(f"  {entry}   ({where})" for entry, where in sorted(found.items()))
        + f"\nHow to fix: {HOW_TO_FIX[kind]}"
    )


# --------------------------------------------------------------------------- the tests


@pytest.fixture(scope="module")
def tree() -> Tree:
    return Tree.read(ROOT)


def test_no_module_imports_a_layer_to_its_right(tree: Tree) -> None:
    assert_none("upward", upward_imports(tree))


def test_no_import_cycles(tree: Tree) -> None:
    assert_none("cycle", cycle_edges(tree))


def test_our_imports_sit_at_module_top(tree: Tree) -> None:
    assert_none("inner import", inner_imports(tree))


def test_no_module_over_500_lines(tree: Tree) -> None:
    assert_none("too long", long_modules(tree, ROOT))


# --------------------------------------------------------------------------- the document


def doc_section(text: str, title: str) -> str:
    """The body of the `## title` section of a markdown document ('' if absent)."""
    match = re.search(rf"^## {re.escape(title)}\s*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    return match.group(1) if match else ""


def contract_table() -> list[str]:
    """The contract as docs/ARCHITECTURE.md must draw it: one line per layer, rightmost first."""
    lines = []
    for position in range(len(LAYERS) - 1, -1, -1):
        allowed = ", ".join(reversed(LAYERS[:position])) or "(nothing of ours)"
        lines.append(f"{LAYERS[position]} → {allowed}")
    return lines


def test_architecture_doc_draws_the_contract() -> None:
    section = doc_section(DOC.read_text(encoding="utf-8"), "Layers")
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", section, re.M | re.S)
    expected = "\n".join(contract_table())
    assert blocks, (
        "docs/ARCHITECTURE.md needs a '## Layers' section whose first fenced block is:\n"
        f"```\n{expected}\n```"
    )
    drawn = [" ".join(line.split()) for line in blocks[0].splitlines() if line.strip()]
    assert drawn == contract_table(), (
        "The fenced block of '## Layers' in docs/ARCHITECTURE.md no longer matches LAYERS in "
        f"{THIS}. If the contract changed on purpose, change both; the block must read:\n"
        f"```\n{expected}\n```"
    )


def packages(root: Path) -> list[str]:
    """Every package folder of the four layers, as `web/api/`."""
    return sorted(
        f"{init.parent.relative_to(root).as_posix()}/"
        for layer in LAYERS
        for init in (root / layer).rglob("__init__.py")
    )


def mentioned_paths(text: str) -> set[str]:
    """Repository paths the document mentions: `worker/imap.py`, `web/api/`, `core/data/*.txt`."""
    tops = "|".join([*LAYERS, "tests", "bench", "migrations", "scripts", "docs", "salesforce"])
    found = re.findall(rf"(?<![\w./-])((?:{tops})/[a-z0-9_./*-]*)", text)
    return {path.rstrip(".") for path in found}


def mentioned_dotted_names(text: str) -> set[str]:
    """Dotted names of ours the document mentions (`worker.sync.engine.request_sync`)."""
    return set(re.findall(rf"(?<![\w./-])((?:{'|'.join(LAYERS)})(?:\.\w+)+)", text))


def test_architecture_doc_names_every_package() -> None:
    text = DOC.read_text(encoding="utf-8")
    found = mentioned_paths(text) | {
        f"{name.replace('.', '/')}/" for name in mentioned_dotted_names(text)
    }
    missing = [package for package in packages(ROOT) if package not in found]
    assert not missing, (
        f"docs/ARCHITECTURE.md does not name these packages: {missing}. Add each, with what "
        "it owns, to the module map (as its folder, `web/api/`, or its dotted name, `web.api`)."
    )


def test_architecture_doc_mentions_only_paths_that_exist() -> None:
    found = mentioned_paths(DOC.read_text(encoding="utf-8"))
    gone = sorted(path for path in found if not any(ROOT.glob(path.rstrip("/"))))
    assert not gone, (
        f"docs/ARCHITECTURE.md mentions paths that do not exist: {gone}. Something moved: "
        "update the document to say where it lives now (or drop the mention)."
    )


def top_level_names(path: Path) -> set[str]:
    """Names a module defines or imports at its top (what `module.name` can refer to)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return names


def names_something(name: str, modules: dict[str, Path]) -> bool:
    """True if `name` is one of our modules, or a module and a name defined at its top."""
    module = resolve(name, modules)
    if module is None:
        return False
    rest = name[len(module) + 1 :].split(".") if module != name else []
    return not rest or (len(rest) == 1 and rest[0] in top_level_names(modules[module]))


def test_architecture_doc_dotted_names_exist() -> None:
    modules = find_modules(ROOT)
    text = DOC.read_text(encoding="utf-8")
    wrong = [
        name for name in sorted(mentioned_dotted_names(text)) if not names_something(name, modules)
    ]
    assert not wrong, (
        f"docs/ARCHITECTURE.md names modules or functions that do not exist: {wrong}. "
        "Something moved or was renamed: update the document to the name it has now."
    )


# --------------------------------------------------------------------------- the checker itself


def write(root: Path, files: dict[str, str]) -> Tree:
    for name, source in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
    for layer in LAYERS:
        (root / layer).mkdir(exist_ok=True)
        (root / layer / "__init__.py").touch()
    return Tree.read(root)


def test_checker_sees_an_upward_import_even_a_lazy_one(tmp_path: Path) -> None:
    tree = write(
        tmp_path,
        {
            "core/a.py": "def f():\n    # lazy import: costs 12 MB RSS\n    from worker import b\n",
            "worker/b.py": "",
            "worker/c.py": "import web.d\n",
            "web/d.py": "from worker import b\n",
        },
    )
    assert set(upward_imports(tree)) == {"upward: core.a → worker.b", "upward: worker.c → web.d"}


def test_checker_sees_cycles_through_packages_and_relative_imports(tmp_path: Path) -> None:
    tree = write(
        tmp_path,
        {
            "web/api/__init__.py": "bp = 1\nfrom . import routes\n",
            "web/api/routes.py": "from web.api import bp\n",
            "web/other.py": "from web.api import routes\n",
        },
    )
    found = cycle_edges(tree)
    assert set(found) == {"cycle: web.api → web.api.routes", "cycle: web.api.routes → web.api"}
    assert (
        "loop: web.api.routes → web.api → web.api.routes"
        in found["cycle: web.api.routes → web.api"]
    )


def test_checker_sees_a_cycle_through_a_package_init(tmp_path: Path) -> None:
    """`web.docs` imports `web.api.common`, which runs `web/api/__init__.py` first."""
    tree = write(
        tmp_path,
        {
            "web/api/__init__.py": "from web.api import openapi\n",
            "web/api/common.py": "",
            "web/api/openapi.py": "from web import docs\n",
            "web/docs.py": "from web.api.common import bp\n",
        },
    )
    found = cycle_edges(tree)
    assert "cycle: web.docs → web.api" in found
    assert "importing web.api.common runs it" in found["cycle: web.docs → web.api"]


def test_checker_wants_a_measured_reason_for_a_lazy_import(tmp_path: Path) -> None:
    tree = write(
        tmp_path,
        {
            "core/heavy.py": "",
            "core/light.py": "",
            "web/a.py": (
                "import core.light\n"
                "def measured():\n"
                "    # lazy import: the renderer costs 38 MB RSS\n"
                "    # in the pixel process\n"
                "    from core import (\n"
                "        heavy,\n"
                "    )\n"
                "    import core.light\n"
                "def unmeasured():\n"
                "    # lazy import: it is heavy\n"
                "    import core.heavy\n"
                "class K:\n"
                "    def method(self):\n"
                "        from core import heavy\n"
            ),
        },
    )
    assert set(inner_imports(tree)) == {
        "inner import: web.a:unmeasured → core.heavy",
        "inner import: web.a:K.method → core.heavy",
    }


def test_checker_counts_physical_lines(tmp_path: Path) -> None:
    tree = write(tmp_path, {"core/long.py": "x = 1\n" * 501, "core/short.py": "x = 1\n" * 500})
    assert long_modules(tree, tmp_path) == {"too long: core/long.py": "501 lines"}


def test_a_violation_fails_naming_it_and_what_to_do() -> None:
    assert_none("too long", {})
    with pytest.raises(AssertionError, match=r"(?s)too long: a\.py.*600 lines.*How to fix: Split"):
        assert_none("too long", {"too long: a.py": "600 lines"})
