"""benchmarks/line_speed.py finds the anomalib anchor beside the repository, wherever cloned."""

from __future__ import annotations

import subprocess
import sys

from tests.support.common import REPO_ROOT

SCRIPT = REPO_ROOT / "benchmarks" / "line_speed.py"


def _anchor(env: dict) -> str:
    """The anchor folder line_speed.py resolves under ``env`` (run in a fresh interpreter)."""
    code = (
        "import importlib.util\n"
        f"spec = importlib.util.spec_from_file_location('line_speed', {str(SCRIPT)!r})\n"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)\n"
        "print(m.ANCHOR)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_anchor_defaults_to_the_shared_folder_beside_the_repository():
    assert _anchor({"PATH": "/usr/bin:/bin"}) == str(
        REPO_ROOT.parent / "shared" / "anchors" / "anomalib"
    )


def test_anchor_dir_overrides(tmp_path):
    assert _anchor({"PATH": "/usr/bin:/bin", "ANCHOR_DIR": str(tmp_path)}) == str(tmp_path)


def test_no_absolute_default_path():
    assert '"/work/' not in SCRIPT.read_text()
