"""The one-writer lock of a run folder: a second writer stops at once with one line that names the holder, also in the
moment between the holder taking the lock and writing its PID (the race a reliability run once caught)."""

from __future__ import annotations

import fcntl
import threading

import pytest

from rcmae.run.folder import LOCK_FILE, RunFolderError, writer_lock


def _hold(run):
    """Take the lock as another writer would (a separate open file: flock treats it as another holder)."""
    run.mkdir(parents=True, exist_ok=True)
    fh = open(run / LOCK_FILE, "a+")  # noqa: SIM115
    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fh


def test_a_holder_that_writes_its_pid_a_moment_late_is_still_named(tmp_path):
    fh = _hold(tmp_path / "run")
    late = threading.Timer(0.1, lambda: (fh.write("PID 4242 (rcmae pretrain)"), fh.flush()))
    late.start()
    try:
        with pytest.raises(RunFolderError, match=r"in use by PID 4242 \(rcmae pretrain\); wait for it"):
            with writer_lock(tmp_path / "run"):
                pytest.fail("a second writer got the lock")
    finally:
        late.join()
        fh.close()


def test_a_silent_holder_is_another_process_and_a_released_lock_is_taken(tmp_path):
    fh = _hold(tmp_path / "run")
    with pytest.raises(RunFolderError, match="in use by another process; wait for it to finish"):
        with writer_lock(tmp_path / "run"):
            pytest.fail("a second writer got the lock")
    fh.close()  # the holder is gone: the lock goes with it
    with writer_lock(tmp_path / "run", command="second"):
        assert (tmp_path / "run" / LOCK_FILE).read_text().endswith("(second)")
