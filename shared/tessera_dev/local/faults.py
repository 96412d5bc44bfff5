"""Faults injected into the local runtime's function path, the kinds AWS delivers: a function
that crashes before doing its work, one that crashes after writing but before its messages are
deleted (so they come back and the work is done again), and a message delivered twice."""

from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tessera_dev.local.pump import Handler


class InjectedFault(RuntimeError):
    """A crash the fault plan asked for (the pump treats it as any failed invocation)."""


@dataclass
class Faults:
    """Per invocation, with these probabilities: crash before the handler runs, crash after
    it returns; per message of an invocation that went through: send its body again."""

    crash_before: float = 0.0
    crash_after: float = 0.0
    duplicate: float = 0.0
    seed: int = 0
    enabled: bool = True
    counts: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def _draw(self) -> float:
        with self._lock:
            return self._rng.random()

    def _count(self, what: str) -> None:
        with self._lock:  # invocations run concurrently
            self.counts[what] += 1

    def wrap(self, function: str, handler: Handler, *, sqs: Any, queue_url: str) -> Handler:
        def faulty(event: dict[str, Any], context: Any) -> dict[str, Any]:
            if not self.enabled:
                return handler(event, context)
            roll = self._draw()
            if roll < self.crash_before:
                self._count(f"{function}.crash_before")
                raise InjectedFault(f"{function}: injected crash before the work")
            result = handler(event, context)
            if roll < self.crash_before + self.crash_after:
                self._count(f"{function}.crash_after")
                raise InjectedFault(f"{function}: injected crash after the work")
            failed = {
                item["itemIdentifier"] for item in (result or {}).get("batchItemFailures", [])
            }
            for record in event["Records"]:
                if record["messageId"] not in failed and self._draw() < self.duplicate:
                    sqs.send_message(QueueUrl=queue_url, MessageBody=record["body"])
                    self._count(f"{function}.duplicated")
            return result

        return faulty
