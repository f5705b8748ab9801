"""Waiting, and looking at processes through /proc, in tests (Linux)."""
from __future__ import annotations

import os
import time
from pathlib import Path


def wait_until(condition, timeout: float, step: float = 0.2):
    """condition()'s first true value within `timeout` seconds, polled every `step`; else its last."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (value := condition()):
            return value
        time.sleep(step)
    return condition()


def namespace_of(pid: int, kind: str = "pid") -> str | None:
    """The process's namespace of that kind ('pid', 'mnt', 'net'), as 'pid:[inode]'; None if gone."""
    try:
        return os.readlink(f"/proc/{pid}/ns/{kind}")
    except OSError:
        return None


def processes(where) -> list[str]:
    """'pid cmdline' of every live (not zombie) process for which where(pid, cmdline) holds."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            state = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if state != "Z" and where(int(entry), cmdline):
            found.append(f"{entry} {cmdline[:160]}")
    return found
