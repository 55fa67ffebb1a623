"""`flywheel up`'s supervisor with real child processes: crash -> restart with backoff, SIGINT -> all stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from flywheel.supervisor import Child, Supervisor
    marker = Path(sys.argv[1])
    crasher = [sys.executable, "-c", "import sys; sys.exit(3)"]
    sleeper = [sys.executable, "-c", f"import os, time; open({str(marker)!r}, 'w').write(str(os.getpid())); time.sleep(600)"]
    Supervisor([Child("crasher", crasher), Child("sleeper", sleeper, "port 1234")], report=lambda m: print(m, flush=True)).run(poll_s=0.1)
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_supervisor_restarts_crashed_child_and_stops_all_on_sigint(tmp_path):
    marker = tmp_path / "sleeper.pid"
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(marker)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    time.sleep(4.5)  # backoff 1 s, then 2 s: at least two restarts of the crasher
    assert proc.poll() is None, "the supervisor itself must keep running when a child crashes"
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=30)
    sleeper_pid = int(marker.read_text())

    assert "started sleeper" in output and "port 1234" in output
    assert "crasher exited with code 3; restarting in 1 s" in output
    assert "restarting in 2 s" in output  # the backoff doubles
    assert "restarted crasher (restart 2" in output
    assert output.rstrip().endswith("all stopped")
    assert proc.returncode == 0
    assert not _alive(sleeper_pid), "Ctrl-C must stop every child"
