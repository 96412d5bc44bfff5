"""onnxruntime's thread pool is sized to the vCPUs Lambda gives the function's memory size."""

from __future__ import annotations

import os

import pytest

from tessera.serving.model import available_vcpus, session_options

CPUS = len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("memory_mb", "expected"),
    [("128", 1), ("1769", 1), ("1770", min(2, CPUS)), ("10240", CPUS)],
)
def test_threads_follow_the_functions_memory_size(
    monkeypatch: pytest.MonkeyPatch, memory_mb: str, expected: int
) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory_mb)
    monkeypatch.delenv("TESSERA_ORT_THREADS", raising=False)
    assert available_vcpus() == expected
    options = session_options()
    assert options.intra_op_num_threads == expected
    assert options.inter_op_num_threads == 1


def test_outside_lambda_every_usable_cpu_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", raising=False)
    monkeypatch.delenv("TESSERA_ORT_THREADS", raising=False)
    assert session_options().intra_op_num_threads == CPUS


def test_an_explicit_thread_count_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "10240")
    monkeypatch.setenv("TESSERA_ORT_THREADS", "1")
    assert session_options().intra_op_num_threads == 1
