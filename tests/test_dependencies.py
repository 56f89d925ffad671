"""Dependencies point one way: the network imports nothing of ours, inference and evaluation no training code, the
package never imports scripts/."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from tests.conftest import REPO

TRAINING = ("autolr_monai.autolr", "autolr_monai.sampling", "autolr_monai.engines")


def _loaded_after(module: str) -> set[str]:
    code = f"import sys, {module}; print(' '.join(m for m in sys.modules if m.startswith(('autolr_monai', 'scripts'))))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    return set(done.stdout.split())


@pytest.mark.parametrize("module", ["autolr_monai.inference", "autolr_monai.evaluation"])
def test_inference_and_evaluation_load_no_training_code(module):
    loaded = _loaded_after(module)
    assert module in loaded and not {m for m in loaded if m.startswith(TRAINING)}, sorted(loaded)


def test_the_network_imports_nothing_of_ours():
    assert _loaded_after("autolr_monai.networks") == {"autolr_monai", "autolr_monai.networks",
                                                     "autolr_monai.networks.dual_path"}  # fmt: skip


def test_the_package_never_imports_scripts():
    for path in (REPO / "autolr_monai").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])  # fmt: skip
            assert not any(n == "scripts" or n.startswith("scripts.") for n in names), path
