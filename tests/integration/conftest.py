import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import fpsharness  # noqa: E402


def pytest_sessionfinish(session, exitstatus):
    """`make test` ends with nothing of its own still running: a process whose command line
    or working directory refers to this checkout or to a world directory the session created
    is a fixture's leak. Name it, kill it, and fail the run."""
    leaked = fpsharness.leaked_processes()
    if not leaked:
        return
    lines = "\n".join(f"  pid {pid}: {cmd[:200]}" for pid, cmd in leaked)
    sys.stderr.write(f"\nLEAKED PROCESSES: {len(leaked)} left running by the tests (now killed):\n{lines}\n")
    for pid, _ in leaked:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    session.exitstatus = 1
