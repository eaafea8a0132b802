"""Imports point one way: foundation <- datasets, models <- configs, utils <- tools.

Read with ``ast`` (no module is imported), every ``import`` in the project's packages, including
the ones inside functions, is checked against the layers:

* foundation (:data:`FOUNDATION`: errors, io, cli, device, distributed, runlock, layout) imports
  nothing of the project except other foundation modules;
* ``datasets.*`` and ``models.*`` import only the foundation and their own package;
* ``configs.*`` and the rest of ``utils`` sit above them (they may import datasets and models)
  and never import ``tools``;
* ``tools`` (the CLIs, and :data:`CLIS`, the CLIs the product keeps outside ``tools/``) may import
  anything; nothing but tests imports them.
"""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("configs", "datasets", "models", "utils", "tools")
FOUNDATION = frozenset({"utils.errors", "utils.io", "utils.cli", "utils.device", "utils.distributed",
                        "utils.runlock", "utils.layout"})
# `python models/speed/pidnet_speed.py` is the official speed tool's path: a CLI living in models/.
CLIS = frozenset({"models.speed.pidnet_speed"})


def project_modules(root):
    """``{dotted module name: path}`` of every ``.py`` file in the packages under ``root``."""
    modules = {}
    for package in PACKAGES:
        for folder, dirs, files in os.walk(os.path.join(root, package)):
            dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__pycache__")))
            for name in sorted(files):
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    parts = os.path.relpath(path, root)[:-3].split(os.sep)
                    if parts[-1] == "__init__":
                        parts = parts[:-1]
                    modules[".".join(parts)] = path
    return modules


def imports_of(module, path, known):
    """``[(line, imported module)]`` of the project modules ``module`` imports."""
    is_package = os.path.basename(path) == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = module.split(".")
                anchor = anchor[:len(anchor) - node.level + (1 if is_package else 0)]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                # `from utils import distributed` imports the module utils.distributed
                target = f"{base}.{alias.name}"
                found.append((node.lineno, target if target in known else base))
    return [(line, name) for line, name in found if name.split(".")[0] in PACKAGES]


def layer_violation(importer, imported):
    """Why ``importer`` must not import ``imported``, or None when the layers allow it."""
    top = "tools" if importer in CLIS else importer.split(".")[0]
    target_top = "tools" if imported in CLIS else imported.split(".")[0]
    if importer in FOUNDATION:
        if imported not in FOUNDATION:
            return f"foundation modules import only the foundation ({', '.join(sorted(FOUNDATION))})"
    elif top in ("datasets", "models"):
        if imported not in FOUNDATION and target_top != top:
            return f"{top} imports only the foundation modules and {top}.*"
    elif top != "tools" and target_top == "tools":
        return "nothing but tests imports tools (move the shared code into configs, datasets, models or utils)"
    return None


def violations(root):
    known = project_modules(root)
    found = []
    for module, path in sorted(known.items()):
        for line, imported in imports_of(module, path, known):
            reason = layer_violation(module, imported)
            if reason:
                found.append(f"{os.path.relpath(path, root)}:{line}: {module} imports {imported}: {reason}")
    return found


def test_imports_follow_the_layers():
    found = violations(ROOT)
    assert not found, "imports against the layers:\n" + "\n".join(found)


def test_the_check_sees_every_package():
    modules = project_modules(ROOT)
    assert FOUNDATION - {"utils.layout"} <= set(modules)
    for package in PACKAGES:
        assert any(m.startswith(package + ".") for m in modules), package
    assert ("utils.engine", "utils.checkpointing") in {
        ("utils.engine", name) for _, name in imports_of("utils.engine", modules["utils.engine"], modules)}


def _write(root, relpath, text):
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.mark.parametrize("relpath, text, expected", [
    ("utils/io.py", "def f():\n    from utils import engine\n",
     "utils/io.py:2: utils.io imports utils.engine: foundation modules import only the foundation"),
    ("models/net.py", "import utils.evaluate\n",
     "models/net.py:1: models.net imports utils.evaluate: models imports only the foundation modules and models.*"),
    ("datasets/pkg/__init__.py", "from ...models import pidnet\n",
     "datasets/pkg/__init__.py:1: datasets.pkg imports models.pidnet: datasets imports only the foundation"),
    ("utils/engine.py", "from tools.train import main\n",
     "utils/engine.py:1: utils.engine imports tools.train: nothing but tests imports tools"),
    ("configs/build.py", "from tools import eval\n",
     "configs/build.py:1: configs.build imports tools.eval: nothing but tests imports tools"),
])
def test_a_violation_is_reported_with_file_line_and_import(tmp_path, relpath, text, expected):
    for module in ("utils/errors.py", "utils/engine.py", "utils/evaluate.py", "models/pidnet.py", "tools/train.py",
                   "tools/eval.py", "configs/default.py", "datasets/base.py"):
        _write(tmp_path, module, "")
    _write(tmp_path, relpath, text)
    found = violations(str(tmp_path))
    assert len(found) == 1 and found[0].startswith(expected), found


def test_allowed_imports_pass(tmp_path):
    _write(tmp_path, "utils/errors.py", "")
    _write(tmp_path, "utils/io.py", "from utils.errors import OutputError\n")
    _write(tmp_path, "models/pidnet.py", "from utils import io\nfrom . import blocks\n")
    _write(tmp_path, "models/blocks.py", "")
    _write(tmp_path, "configs/default.py", "import datasets.base\nfrom models.pidnet import PIDNet\n")
    _write(tmp_path, "datasets/base.py", "")
    _write(tmp_path, "utils/engine.py", "from configs.default import get_cfg\nimport models.pidnet\n")
    _write(tmp_path, "tools/train.py", "from tools.eval import x\nimport utils.engine\n")
    _write(tmp_path, "tools/eval.py", "")
    assert violations(str(tmp_path)) == []
