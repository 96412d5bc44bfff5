"""Promotion rules: at least as accurate on the same evaluation set, an atomic pointer that
cannot be overwritten on stale information, and the history of every pointer."""

from __future__ import annotations

from typing import Any

import pytest

from tessera.registry import ModelRegistry, PromotionConflict, should_promote
from tessera.storage import ObjectStore


def test_ties_promote_and_worse_does_not() -> None:
    assert should_promote(0.9, None)
    assert should_promote(0.9, 0.9)
    assert not should_promote(0.89, 0.9)


def test_promotion_compares_on_the_candidates_evaluation_and_keeps_history(
    any_store: ObjectStore,
) -> None:
    registry = ModelRegistry(any_store, "digits")
    first = registry.promote_if_better(
        "v1", accuracy=0.9, evaluation={}, champion_accuracy=lambda p: 0.0
    )
    assert first.promoted and first.champion_before is None
    seen: list[str] = []

    def measured(pointer: dict[str, Any]) -> float:
        seen.append(pointer["version"])
        return 0.95  # the champion on *this* candidate's rows, not its stored accuracy

    second = registry.promote_if_better(
        "v2", accuracy=0.93, evaluation={}, champion_accuracy=measured
    )
    assert not second.promoted and seen == ["v1"] and second.champion_accuracy == 0.95
    third = registry.promote_if_better(
        "v3", accuracy=0.96, evaluation={}, champion_accuracy=measured
    )
    assert third.promoted
    assert registry.champion()["previous_version"] == "v1"  # type: ignore[index]
    assert [p["version"] for p in registry.history()] == ["v1", "v3"]


def test_a_concurrent_promotion_is_not_overwritten_on_stale_information(
    any_store: ObjectStore,
) -> None:
    registry = ModelRegistry(any_store, "digits")
    registry.promote_if_better("v1", accuracy=0.9, evaluation={}, champion_accuracy=lambda p: 0.0)

    def racing(pointer: dict[str, Any]) -> float:
        # Another run promotes a better model while this one is measuring v1.
        if pointer["version"] == "v1":
            other = ModelRegistry(any_store, "digits")
            other.promote("v-other", accuracy=0.99, evaluation={})
            return 0.9
        return 0.99

    decision = registry.promote_if_better(
        "v2", accuracy=0.95, evaluation={}, champion_accuracy=racing
    )
    assert not decision.promoted and decision.champion_before["version"] == "v-other"  # type: ignore[index]
    assert registry.champion()["version"] == "v-other"  # type: ignore[index]


def test_endless_races_end_in_a_conflict(any_store: ObjectStore) -> None:
    registry = ModelRegistry(any_store, "digits")
    registry.promote("v0", accuracy=0.5, evaluation={})
    counter = iter(range(100))

    def always_moving(pointer: dict[str, Any]) -> float:
        registry.promote(f"v-{next(counter)}", accuracy=0.5, evaluation={})
        return 0.5

    with pytest.raises(PromotionConflict):
        registry.promote_if_better(
            "v2", accuracy=0.9, evaluation={}, champion_accuracy=always_moving
        )
