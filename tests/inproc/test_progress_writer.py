"""The progress writer beside the sampling loop: every posted step is written, in order, and
`close()` returns only after the last one; a step posted while a write is under way waits for
the next write (several steps in one transaction); a failed write does not stop the writer."""

from __future__ import annotations

import threading

from toonforge.worker.progress_writer import ProgressWriter


def test_every_step_is_written_in_order_and_close_waits_for_the_last() -> None:
    written: list[list[int]] = []
    release = threading.Event()
    first_write = threading.Event()

    def write(items: list[int]) -> None:
        written.append(items)
        first_write.set()
        release.wait(10)  # the database is slow: later steps pile up meanwhile

    writer: ProgressWriter[int] = ProgressWriter(write, "progress-test")
    writer.post(1)
    assert first_write.wait(10)
    for step in (2, 3, 4):
        writer.post(step)  # returns at once: the loop never waits on the write
    release.set()
    writer.close(timeout=10)
    assert written == [[1], [2, 3, 4]]
    assert [s for batch in written for s in batch] == [1, 2, 3, 4]


def test_a_failed_write_does_not_stop_the_writer() -> None:
    written: list[int] = []
    failed = threading.Event()

    def write(items: list[int]) -> None:
        if not failed.is_set():
            failed.set()
            raise RuntimeError("database went away")
        written.extend(items)

    writer: ProgressWriter[int] = ProgressWriter(write, "progress-test")
    writer.post(1)
    assert failed.wait(10)
    writer.post(2)
    writer.close(timeout=10)
    assert written == [2]


def test_steps_posted_within_the_interval_share_one_transaction() -> None:
    written: list[list[int]] = []
    first_write = threading.Event()

    def write(items: list[int]) -> None:
        written.append(items)
        first_write.set()

    # A long interval: the steps posted after the first write wait for it (or for close).
    writer: ProgressWriter[int] = ProgressWriter(write, "progress-test", min_interval=60)
    writer.post(1)
    assert first_write.wait(10)
    for step in (2, 3, 4):
        writer.post(step)
    writer.close(timeout=10)  # close does not wait for the interval: it writes at once
    assert written == [[1], [2, 3, 4]]
