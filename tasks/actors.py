"""Every actor by name and queue: send a message without loading the module that runs it.

A sender needs only an actor's name, its queue and its arguments (a Dramatiq message carries
nothing else), so the consumer, the candle worker and backfill send through these references
instead of importing the actors' modules: importing ``tasks.signals`` would load the signal plan,
the deployment's formula plugins and TA-Lib into them, and a broken plugin could stop candles.
The actor modules declare their actors with these names and queues, so they cannot drift apart
(``tests/unit/test_actors.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dramatiq

import tasks.broker  # noqa: F401  # sets the global broker, which send() enqueues on


@dataclass(frozen=True, slots=True)
class ActorRef:
    """An actor known by name: enough to send it messages."""

    actor_name: str
    queue_name: str

    def send(self, *args: Any) -> dramatiq.Message[Any]:
        """Enqueue a message for the actor with ``args``, as ``Actor.send`` does."""
        message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name=self.queue_name, actor_name=self.actor_name, args=args, kwargs={},
            options={},
        )  # fmt: skip
        return dramatiq.get_broker().enqueue(message)


BACKFILL_KLINES = ActorRef("backfill_klines", "backfill")  # tasks/backfill.py (worker)
EVALUATE_SIGNALS = ActorRef("evaluate_signals", "signals")  # tasks/signals.py (signals)
