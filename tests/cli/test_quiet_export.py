"""``export`` prints no torch deprecation warnings (it printed two about the TorchScript
exporter, which dualpatch picks on purpose)."""

from __future__ import annotations

from tests.bad_input.conftest import cli, model_dir  # noqa: F401  (the fixtures)
from tests.support.bad_input import warning_lines


def test_export_prints_no_library_warnings(cli, model_dir, tmp_path):  # noqa: F811
    code, out, err = cli("export", "--model", model_dir, "--out", tmp_path / "scorer.onnx")
    assert code == 0, err
    assert warning_lines(err) == [] and "Deprecat" not in err and "TorchScript" not in err
    assert (tmp_path / "scorer.onnx").is_file()
