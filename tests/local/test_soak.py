"""At-least-once delivery under injected faults ends with exactly one dataset row per tile:
the scaled-down `tessera bench soak` (the 10,000-tile figures come from running it)."""

from __future__ import annotations

import json

import pytest

from tessera_dev.bench.soak import main, run_soak
from tessera_dev.local.faults import Faults


def test_crashes_before_and_after_the_work_and_duplicates_leave_one_row_per_tile() -> None:
    # GIVEN faults in every function's path: crashes before and after the work, duplicates
    faults = Faults(crash_before=0.1, crash_after=0.3, duplicate=0.2, seed=1)
    # WHEN 8 sheets of 10 cells are dropped and the queues drain (and any DLQ is redriven)
    result = run_soak(sheets=8, cells=10, cols=5, faults=faults, timeout=300)
    # THEN faults of every kind happened, messages were retried, and still every tile has
    # exactly one row: none lost, none duplicated, nothing left in a DLQ
    injected = result["injected"]
    assert sum(v for k, v in injected.items() if k.endswith("crash_after")) > 0
    assert sum(v for k, v in injected.items() if k.endswith("duplicated")) > 0
    assert result["pumps"]["vectorize"]["failed"] > 0
    assert (result["tiles"], result["rows"]) == (80, 80)
    assert result["lost"] == result["duplicated"] == result["orphaned"] == 0
    assert not any(result["dlq_after_redrive"].values())
    assert result["exactly_once"]


def test_dead_lettered_sheets_are_redriven_and_processed_once_the_fault_is_fixed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # GIVEN a split function that crashes on every invocation, fixed before the redrive
    # WHEN two sheets are dropped (through the command, as a user runs it)
    code = main(
        ["--sheets", "2", "--cells", "10", "--cols", "5", "--crash-before", "1",
         "--crash-after", "0", "--duplicate", "0", "--heal", "--timeout", "120"]
    )  # fmt: skip
    out = capsys.readouterr().out.strip().splitlines()
    # THEN both sheets (with S3's test event, when it came late enough to meet the fault) went
    # to the split DLQ after their receives, the redrive moved them back, and every tile then
    # got exactly one row
    result = json.loads(out[-1])
    assert code == 0 and result["exactly_once"]
    dead = result["dlq_before_redrive"]["split"]
    assert dead in (2, 3)
    assert result["redrives"][0]["split"] == dead
    assert result["rows"] == 20
    assert "exactly one row per tile: yes" in out


@pytest.mark.slow
def test_a_thousand_sheets_dropped_at_once_are_all_rows_once() -> None:
    """1,000 uploads in one burst: the queues take the backlog, every sheet is split and
    vectorized once, and nothing is left in a DLQ (no faults: the load alone)."""
    result = run_soak(sheets=1000, cells=2, cols=2, faults=Faults(enabled=False), timeout=900)
    assert result["idle"]
    assert (result["tiles"], result["rows"]) == (2000, 2000)
    assert result["lost"] == result["duplicated"] == result["orphaned"] == 0
    assert result["pumps"]["split"]["succeeded"] >= 1000
    assert not any(result["dlq_before_redrive"].values())
    assert result["exactly_once"]
