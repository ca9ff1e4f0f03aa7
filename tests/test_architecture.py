"""The import direction of docs/architecture.md, enforced: every import statement of every module
(function-level ones too, parsed with ast) must point from a folder to one of the same or a lower
layer, and the folders must not import each other in a cycle."""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

#: Folder (or top-level module) of nnunet_nerve -> layer; imports go to the same or a lower layer.
LAYERS = {
    "errors": 0,
    "parameters": 1, "io": 1,
    "network": 2, "training": 2, "registry": 2, "dicom": 2, "evaluation": 2, "biomarkers": 2, "segmentation": 2,
    "study": 3,
    "api": 4,
    "app": 5,
}
#: The folders beside the package: nnUNet_extTrainer's folder re-exports training (never imported
#: by the package); dataset_conversion is a script entry, beside the CLI.
OUTSIDE = {"trainers": 3, "dataset_conversion": 5}
#: ``nnunet_nerve/__init__.py``: ``__version__`` (which any module may import) and the lazy FCDenseNet.
ROOT_MAY_IMPORT = {"network"}


def folder_of(module: str, outside) -> "str | None":
    """``nnunet_nerve.<folder>...`` (or ``trainers``/``dataset_conversion`` ...) -> the folder; the
    package root itself -> "" ; anything else (numpy, nnunetv2, ...) -> None."""
    parts = module.split(".")
    if parts[0] == "nnunet_nerve":
        if len(parts) == 1:
            return ""
        return {"trainers": "trainers", "dataset_conversion": "dataset_conversion"}.get(parts[1], parts[1])
    return parts[0] if parts[0] in outside else None


def imported_modules(path: Path, package: str) -> list:
    """(line, module) of every import in the file; ``from a import b`` gives ``a.b`` when b is a
    submodule-like name and ``a`` otherwise; relative imports are resolved against ``package``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found += [(node.lineno, f"{base}.{alias.name}" if not alias.name.startswith("__") else base)
                      for alias in node.names]
    return found


def import_problems(repo: Path, layers=LAYERS, outside=OUTSIDE, package: str = "nnunet_nerve") -> list:
    """Every import against the layer order, every unknown folder, and every cycle between folders."""
    known = {**layers, **outside}
    problems, edges = [], {}
    sources = [(p, p.relative_to(repo / package).parts) for p in sorted((repo / package).rglob("*.py"))]
    sources += [(p, p.relative_to(repo).parts) for name in outside for p in sorted((repo / name).rglob("*.py"))]
    for path, parts in sources:
        src = "" if parts == ("__init__.py",) else parts[0].removesuffix(".py")
        if src not in known and src != "":
            problems.append(f"{path}: folder {src!r} has no layer (add it to LAYERS and docs/architecture.md)")
            continue
        module_package = ".".join((package, *parts[:-1])) if src not in outside else ".".join(parts[:-1])
        for line, module in imported_modules(path, module_package):
            dst = folder_of(module, outside)
            if dst is None or dst == src or dst == "":
                continue  # third-party, same folder, or the package root (__version__)
            where = f"{path.relative_to(repo)}:{line} imports {module}"
            if dst not in known:
                problems.append(f"{where}: folder {dst!r} has no layer")
            elif src == "":
                if dst not in ROOT_MAY_IMPORT:
                    problems.append(f"{where}: the package root imports only {sorted(ROOT_MAY_IMPORT)}")
            elif dst in outside and src not in outside:
                problems.append(f"{where}: the package never imports {dst}/ (it re-exports the package)")
            elif known[dst] > known[src]:
                problems.append(f"{where}: {src} (layer {known[src]}) imports upwards into {dst} "
                                f"(layer {known[dst]})")
            else:
                edges.setdefault(src, set()).add(dst)
    problems += [f"import cycle between folders: {' -> '.join(c)}" for c in folder_cycles(edges)]
    return problems


def folder_cycles(edges: dict) -> list:
    """One cycle (as a closed path of folders) per strongly connected group, by depth-first search."""
    cycles, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return cycles


def test_imports_point_down_and_no_folder_cycle():
    assert import_problems(REPO) == []


def test_every_folder_has_a_layer_and_a_line_in_the_architecture_doc():
    doc = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    package = REPO / "nnunet_nerve"
    folders = {p.name for p in package.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in package.glob("*.py") if p.name != "__init__.py"}
    assert folders | modules == set(LAYERS)
    for name in [*LAYERS, *OUTSIDE]:
        assert f"`{name}/`" in doc or f"`{name}.py`" in doc, f"docs/architecture.md does not describe {name}"


def test_the_checker_finds_an_upward_import_and_a_cycle(tmp_path):
    """The check itself on a made-up package: an upward import, a cycle within a layer, an import of
    the re-export folder, an unknown folder; function-level and relative imports count."""
    pkg = tmp_path / "nnunet_nerve"
    files = {
        "__init__.py": "",
        "errors.py": "",
        "io/__init__.py": "",
        "io/atomic.py": "def f():\n    from nnunet_nerve.evaluation import metrics\n",  # upwards, hidden in a function
        "evaluation/__init__.py": "",
        "evaluation/metrics.py": "from ..biomarkers import measures\n",  # relative
        "biomarkers/__init__.py": "",
        "biomarkers/measures.py": "from nnunet_nerve.evaluation.metrics import dice\nimport trainers.x\n",
        "mystery/__init__.py": "",
    }
    for name, text in files.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(text)
    (tmp_path / "trainers").mkdir()
    (tmp_path / "trainers" / "x.py").write_text("from nnunet_nerve.training import y\n")
    layers = {"errors": 0, "io": 1, "evaluation": 2, "biomarkers": 2, "training": 2}
    problems = import_problems(tmp_path, layers, {"trainers": 3})
    assert any("io/atomic.py:2 imports nnunet_nerve.evaluation.metrics: io (layer 1) imports upwards" in p
               for p in problems), problems
    assert any(p.startswith("import cycle between folders: biomarkers -> evaluation -> biomarkers")
               or p.startswith("import cycle between folders: evaluation -> biomarkers -> evaluation")
               for p in problems), problems
    assert any("imports trainers.x: the package never imports trainers/" in p for p in problems), problems
    assert any("folder 'mystery' has no layer" in p for p in problems), problems
    assert len(problems) == 4, problems
