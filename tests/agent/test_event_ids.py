"""agent/event_ids.py: ids in uuid4's form, distinct across threads and pool refills."""

from __future__ import annotations

import threading
import uuid

from runtime_signals.agent.event_ids import EventIds


def test_ids_are_random_uuids_as_uuid4_writes_them() -> None:
    ids = EventIds()
    for _ in range(10_000):  # more than one block of the pool
        text = ids.next()
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_no_two_ids_are_the_same_whichever_thread_takes_them() -> None:
    ids = EventIds()
    taken: list[list[str]] = [[] for _ in range(4)]

    def take(into: list[str]) -> None:
        for _ in range(20_000):
            into.append(ids.next())

    threads = [threading.Thread(target=take, args=(into,)) for into in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [text for into in taken for text in into]
    assert len(set(everything)) == len(everything) == 80_000
