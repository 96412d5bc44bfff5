"""`tessera bench training` argument handling and table layout (the figures themselves come
from running it on MNIST, never from a test)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tessera_dev.bench.training import _table, epoch_budget, main


def test_epoch_budgets_apply_to_all_or_to_named_families() -> None:
    assert epoch_budget(None, "cnn") is None
    assert epoch_budget("3", "dense") == 3
    assert epoch_budget("cnn-strong=8,dense=20", "cnn-strong") == 8
    assert epoch_budget("cnn-strong=8", "mlp") is None


def test_tables_line_up_in_markdown() -> None:
    lines = _table(["family", "accuracy"], [["mlp", "98.1%"], ["cnn-strong", "99.4%"]]).splitlines()
    assert lines[0].startswith("| family ") and set(lines[1]) <= {"|", "-"}
    assert len({len(line) for line in lines}) == 1


def test_missing_mnist_and_unknown_families_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--mnist", str(tmp_path)]) == 2
    assert "no MNIST files" in capsys.readouterr().err
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"")
    assert main(["--mnist", str(tmp_path), "--families", "svm"]) == 2
    assert "unknown families" in capsys.readouterr().err
