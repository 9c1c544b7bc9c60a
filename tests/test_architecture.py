"""docs/architecture.md's dependency rules, checked on the source: layers import only layers
below them, configs never import experiments, experiments never edit configs, and the package
imports on a base install (no extras)."""

import ast
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Bottom up, as docs/architecture.md draws them. Top-level modules of jaxprune/ are the core;
# a subpackage may import its own modules and those of lower layers.
LAYERS = {"core": 0, "quant": 1, "models": 2, "kernels": 2, "data": 3, "eval": 4,
          "oneshot": 5, "training": 5, "structured": 5}
EXTRAS = ("gguf", "tokenizers", "safetensors", "matplotlib", "torch", "transformers", "pyarrow",
          "lm_eval", "datasets", "huggingface_hub")


def _imports(path: pathlib.Path) -> set[str]:
    """Every module a file imports (``from a.b import c`` gives ``a.b`` and ``a.b.c``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def _layer(parts: list[str]) -> str:
    """The layer of ``jaxprune.<parts>``: its subpackage, or the core for a top-level module."""
    if not parts or not parts[0] or not (ROOT / "jaxprune" / parts[0]).is_dir():
        return "core"
    return parts[0]


def _jaxprune_files():
    return [p for p in (ROOT / "jaxprune").rglob("*.py") if p.name != "__init__.py"
            or p.parent.name != "jaxprune"]  # the package root re-exports; it has no layer


@pytest.mark.parametrize("path", _jaxprune_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_each_layer_imports_only_layers_below_it(path):
    own = _layer(list(path.relative_to(ROOT / "jaxprune").parts[:-1]) or [""])
    for name in _imports(path):
        parts = name.split(".")
        if parts[0] in ("experiments", "configs"):
            pytest.fail(f"{path.name} imports {name}: the library never imports entry points")
        if parts[0] != "jaxprune" or len(parts) == 1:
            continue
        other = _layer(parts[1:2])
        assert other == own or LAYERS[other] < LAYERS[own], (
            f"{path.relative_to(ROOT)} ({own}) imports {name} ({other}), a layer not below it")


def test_the_core_imports_no_flax_and_no_model():
    for path in (ROOT / "jaxprune").glob("*.py"):
        imported = _imports(path)
        assert not any(n.split(".")[0] in ("flax", "optax") for n in imported), path.name


def test_configs_never_import_experiments_and_experiments_never_edit_configs():
    for path in (ROOT / "configs").rglob("*.py"):
        assert not any(n.split(".")[0] == "experiments" for n in _imports(path)), path
    for path in (ROOT / "experiments").rglob("*.py"):
        source = path.read_text()
        for name in _imports(path):
            if name.startswith("configs"):
                # A binary reads a config only through --config; it never imports one.
                pytest.fail(f"{path.relative_to(ROOT)} imports {name}")
        assert "configs." not in source.replace("configs/", ""), path


def test_every_subpackage_imports_without_the_extras():
    # A base install lacks the [models], [plots], [reference], [zeroshot] and [harness] extras;
    # block them.
    script = (
        "import importlib.abc, sys\n"
        f"BLOCKED = {EXTRAS!r}\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import jaxprune, jaxprune.structured, jaxprune.data, jaxprune.training\n"
        "import jaxprune.oneshot, jaxprune.models, jaxprune.eval, jaxprune.kernels\n"
        "import jaxprune.quant\n"
        "import tempfile\n"
        "from jaxprune import models\n"
        "path = tempfile.mkstemp(suffix='.gguf')[1]\n"
        "try:\n"
        "    models.load_gguf(path)\n"
        "except ImportError as err:\n"
        "    print(err)\n"
        "from jaxprune.eval import tasks\n"
        "try:\n"
        "    tasks.task_documents(tasks.get_task('rte'), limit=1)\n"
        "except ImportError as err:\n"
        "    print(err)\n"
        "try:\n"
        "    import jaxprune.eval.harness\n"
        "except ImportError as err:\n"
        "    print(err)\n"
        "try:\n"
        "    models.load('owner/model')\n"
        "except ImportError as err:\n"
        "    print(err)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=ROOT, check=False)
    assert out.returncode == 0, out.stderr
    assert "pip install 'jaxprune[models]'" in out.stdout
    assert "pip install 'jaxprune[zeroshot]'" in out.stdout
    assert "pip install 'jaxprune[harness]'" in out.stdout
    assert "a Hugging Face Hub id needs huggingface_hub: pip install 'jaxprune[models]'" in (
        out.stdout)


def test_no_function_in_the_library_is_longer_than_60_lines():
    long = []
    for path in (ROOT / "jaxprune").rglob("*.py"):
        source = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(source))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                count = sum(1 for n in range(node.lineno, node.end_lineno + 1)
                            if n in _body_lines(node) and source[n - 1].strip()
                            and not source[n - 1].strip().startswith("#"))
                if count > 60:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({count})")
    assert not long, long


def _body_lines(node) -> set[int]:
    body = node.body
    if body and isinstance(body[0], ast.Expr) and isinstance(
            getattr(body[0], "value", None), ast.Constant) and isinstance(body[0].value.value,
                                                                          str):
        body = body[1:]
    return {n for child in body for n in range(child.lineno, child.end_lineno + 1)}
