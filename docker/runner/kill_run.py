#!/usr/bin/env python3
"""Stops one diagnosis inside the runner container: the runner (its command line holds
`--run-id <run id>`), every process under it (the MCP servers it started), and any other
whose environment holds DD_RUN_ID=<run id> (an MCP server that outlived it) get SIGTERM,
then SIGKILL. The runner and its private Prometheus MCP server are not dumpable, so their
environment cannot be read here: their command line and parentage can.

The service execs this at a diagnosis's deadline. Dropping the exec's stream is not enough:
the exec'd process keeps running inside the container until it finishes on its own.

usage: kill_run.py RUN_ID [GRACE_SECONDS]
"""

import os
import signal
import sys
import time


def read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:  # gone, or not ours to read
        return b""


def processes(run_id: str) -> list[int]:
    marker = f"DD_RUN_ID={run_id}".encode()
    flag = b"\0--run-id\0" + run_id.encode() + b"\0"
    pids = [int(e) for e in os.listdir("/proc") if e.isdigit() and int(e) != os.getpid()]
    parent: dict[int, int] = {}
    found: set[int] = set()
    for pid in pids:
        stat = read(f"/proc/{pid}/stat")
        if stat:
            # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            parent[pid] = int(stat.rsplit(b")", 1)[1].split()[1])
        if flag in read(f"/proc/{pid}/cmdline") + b"\0" or marker in read(f"/proc/{pid}/environ").split(b"\0"):
            found.add(pid)
    # Everything under what was found.
    grew = True
    while grew:
        under = {pid for pid, ppid in parent.items() if ppid in found} - found
        found |= under
        grew = bool(under)
    return sorted(found)


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
