#!/usr/bin/env python3
"""Stops one diagnosis inside the runner container: every process whose environment holds
DD_RUN_ID=<run id> (the runner and the MCP servers it started) gets SIGTERM, then SIGKILL.

The service execs this at a diagnosis's deadline. Dropping the exec's stream is not enough:
the exec'd process keeps running inside the container until it finishes on its own.

usage: kill_run.py RUN_ID [GRACE_SECONDS]
"""

import os
import signal
import sys
import time


def processes(run_id: str) -> list[int]:
    marker = f"DD_RUN_ID={run_id}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if marker in f.read().split(b"\0"):
                    found.append(int(entry))
        except OSError:  # gone, or not ours
            continue
    return found


def signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def main() -> int:
    if len(sys.argv) < 2 or not sys.argv[1]:
        print(__doc__, file=sys.stderr)
        return 64
    run_id = sys.argv[1]
    grace = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
    signal_all(processes(run_id), signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not processes(run_id):
            return 0
        time.sleep(0.1)
    left = processes(run_id)
    signal_all(left, signal.SIGKILL)
    print(f"killed {len(left)} process(es) that ignored SIGTERM", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
