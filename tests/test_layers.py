"""The layers of DESIGN.md, checked on the source with ``ast``.

import-linter (grimp) finds a package's modules by walking the directory of its root
package, so it would not see ``ucoder.probes`` and ``ucoder.callbacks``, which setuptools
maps from the top-level folders ``probes/`` and ``callbacks/``. This checker reads the
same mapping from ``pyproject.toml`` and every import statement (also those inside
functions and ``TYPE_CHECKING`` blocks) of every file.

Rules:
* ``ucoder.probes`` imports nothing of ucoder but itself (usable without the rest);
* the core (all of ucoder but ``ucoder.commands``, ``ucoder.cli``, ``ucoder.__main__``
  and ``ucoder.callbacks``) imports nothing of ``ucoder.callbacks``;
* ``ucoder.sandbox`` imports nothing of ``ucoder.ipc`` or ``ucoder.evaluation``;
* no ``_private`` name or module is imported from another package (``ucoder.ipc``,
  ``ucoder.evaluation``, ... ; the top-level modules of ``ucoder`` are one package).
"""

from __future__ import annotations

import ast
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
ENTRY_POINTS = ("ucoder.commands", "ucoder.cli", "ucoder.__main__", "ucoder.callbacks")


def source_roots(root: Path) -> dict[str, Path]:
    """Import name -> folder, from ``[tool.setuptools.package-dir]`` plus ``ucoder``."""
    config = tomllib.loads((root / "pyproject.toml").read_text())
    mapped = config["tool"]["setuptools"].get("package-dir", {})
    return {"ucoder": root / "ucoder", **{k: root / v for k, v in mapped.items()}}


def modules(root: Path) -> Iterator[tuple[str, Path]]:
    """(module name, file) of every source file, with mapped folders under their name."""
    roots = source_roots(root)
    for name, folder in roots.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder).with_suffix("").parts
            if rel[-1] == "__init__":
                rel = rel[:-1]
            mod = ".".join((name, *rel))
            if name == "ucoder" and any(mod == k or mod.startswith(k + ".")
                                        for k in roots if k != "ucoder"):
                continue  # a mapped package is read from its own folder only
            yield mod, path


def imports(module: str, path: Path) -> Iterator[tuple[int, str, str | None]]:
    """(line, imported module, imported name or None) of every import in ``path``."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                keep = len(parts) - node.level + (1 if is_package else 0)
                base = ".".join(parts[:keep] + ([base] if base else []))
            for alias in node.names:
                yield node.lineno, base, alias.name


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def package_of(module: str) -> str:
    """``ucoder.ipc.round`` -> ``ucoder.ipc``; ``ucoder.models`` -> ``ucoder``."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 else parts[0]


def private(target: str, name: str | None) -> bool:
    parts = target.split(".") + ([name] if name else [])
    return any(p.startswith("_") and not p.startswith("__") for p in parts)


def rule_broken(importer: str, target: str, name: str | None, submodules: set[str]
                ) -> str | None:
    """Which rule ``importer`` breaks by importing ``name`` from ``target`` (None: none)."""
    if name and f"{target}.{name}" in submodules:
        target, name = f"{target}.{name}", None  # `from pkg import module`
    if not within(target, "ucoder"):
        return None
    if within(importer, "ucoder.probes") and not within(target, "ucoder.probes"):
        return "ucoder.probes imports nothing of ucoder but itself"
    core = not any(within(importer, p) for p in ENTRY_POINTS)
    if core and within(target, "ucoder.callbacks"):
        return "the core imports nothing of ucoder.callbacks"
    if within(importer, "ucoder.sandbox") and (within(target, "ucoder.ipc")
                                              or within(target, "ucoder.evaluation")):
        return "ucoder.sandbox imports nothing of ucoder.ipc or ucoder.evaluation"
    if package_of(importer) != package_of(target) and private(target, name):
        return f"no private name from another package ({package_of(target)})"
    return None


def layer_violations(root: Path = ROOT) -> list[str]:
    """Every import of the tree at ``root`` that breaks a rule, as ``file:line: ...``."""
    found = list(modules(root))
    submodules = {m for m, _ in found}
    out = []
    for module, path in found:
        for line, target, name in imports(module, path):
            rule = rule_broken(module, target, name, submodules)
            if rule:
                what = f"{target}.{name}" if name else target
                out.append(f"{path.relative_to(root)}:{line}: {module} imports {what}: {rule}")
    return out


def test_the_layers_hold():
    assert layer_violations() == []


def test_every_source_file_is_checked():
    names = {m for m, _ in modules(ROOT)}
    assert {"ucoder.probes.fit", "ucoder.callbacks.base", "ucoder.sandbox.pool",
            "ucoder.ipc.consensus", "ucoder.cli"} <= names
    assert not any(n.startswith(("probes", "callbacks")) for n in names)


@pytest.mark.parametrize("file,line,rule", [
    ("probes/fit.py", "from ucoder.models import load_model", "ucoder.probes imports nothing"),
    ("probes/fit.py", "from ..jsonl import read_jsonl", "ucoder.probes imports nothing"),
    ("ucoder/sft.py", "import ucoder.callbacks.base", "the core imports nothing"),
    ("ucoder/ipc/round.py", "from ucoder.callbacks import base", "the core imports nothing"),
    ("ucoder/sandbox/pool.py", "from ucoder.ipc.code import parses", "ucoder.sandbox imports"),
    ("ucoder/evaluation/runner.py", "from ucoder.ipc.stages import _problems",
     "no private name from another package (ucoder.ipc)"),
])
def test_a_planted_violation_is_reported(tmp_path, file, line, rule):
    tree = tmp_path / "tree"
    for part in ("ucoder", "probes", "callbacks"):
        shutil.copytree(ROOT / part, tree / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tree / "pyproject.toml")
    assert layer_violations(tree) == []
    target = tree / file
    target.write_text(target.read_text() + f"\n\ndef _planted():\n    {line}\n")
    [found] = layer_violations(tree)
    assert found.startswith(f"{file}:") and rule in found, found


def test_entry_points_may_use_callbacks_and_packages_their_own_private_names():
    subs = {"ucoder.ipc.stages"}
    assert rule_broken("ucoder.commands.fit", "ucoder.callbacks", "SelfTraining", subs) is None
    assert rule_broken("ucoder.ipc.round", "ucoder.ipc.stages", "_problems", subs) is None
    assert rule_broken("ucoder.generation_vllm", "ucoder.generation", "_check_args", subs) \
        is None
    assert rule_broken("ucoder.evaluation.runner", "ucoder.ipc", "stages", subs) is None


# -- one import root: the wheel installs `ucoder` and nothing else ----------------------
def test_the_wheel_installs_one_top_level_name(tmp_path):
    import subprocess
    import sys
    import zipfile

    src = tmp_path / "src"  # a copy, so the build leaves nothing in the checkout
    for part in ("ucoder", "probes", "callbacks"):
        shutil.copytree(ROOT / part, src / part, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", str(src), "-w", str(tmp_path / "dist")], check=True, timeout=120,
                   capture_output=True)
    [wheel] = (tmp_path / "dist").glob("ucoder-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        [top] = [n for n in names if n.endswith(".dist-info/top_level.txt")]
        assert zf.read(top).decode().split() == ["ucoder"]
    assert {n.split("/")[0] for n in names if not n.startswith("ucoder-")} == {"ucoder"}
    # Every package folder ships (a new one must be added to pyproject's packages list).
    for mod, path in modules(ROOT):
        if path.name == "__init__.py":
            assert f"{mod.replace('.', '/')}/__init__.py" in names, mod


def test_bare_probes_and_callbacks_are_not_ours(tmp_path):
    import subprocess
    import sys

    code = ("import importlib.util as u\n"
            "for name in ('probes', 'callbacks'):\n"
            "    spec = u.find_spec(name)\n"
            "    print(name, spec.origin if spec else None)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60, check=True).stdout
    for line in out.splitlines():
        origin = line.split(" ", 1)[1]
        assert origin == "None" or not origin.startswith(str(ROOT)), line
