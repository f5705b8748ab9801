"""Waiting, and looking at processes through /proc, in tests (Linux): process trees, Ray sessions,
listening sockets, files that contain a secret."""
from __future__ import annotations

import os
import re
import signal
import time
from datetime import datetime
from pathlib import Path

RAY_TEMP = Path(os.environ.get("RAY_TMPDIR", "/tmp")) / "ray"   # where Ray keeps its session folders


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


def proc_table() -> dict[int, tuple[int, int, str, str]]:
    """pid -> (parent pid, process group, state, command line) for every process we can read."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        table[int(entry)] = (int(fields[1]), int(fields[2]), fields[0], cmdline)
    return table


def descendants(root: int) -> list[int]:
    table = proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, *_rest) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def alive(pids) -> list[str]:
    """The given processes that still run (zombies, already dead, don't count), as 'pid cmdline'."""
    table = proc_table()
    return [f"{pid} {table[pid][3][:120]}" for pid in pids if pid in table and table[pid][2] != "Z"]


def processes_of_ray_session(driver_pid: int) -> list[int]:
    """Live processes of the Ray session a driver started (Ray names it session_<time>_<pid>)."""
    pattern = re.compile(rf"session_[0-9_-]+_{driver_pid}\b")
    return [pid for pid, (_ppid, _pgid, state, cmd) in proc_table().items()
            if state != "Z" and pattern.search(cmd)]


def ray_sessions_of(pid: int, since: float) -> list[Path]:
    """The Ray session folders (session_<local time>_<pid>) that process `pid` started at or after
    `since` (a time.time()). Older ones belong to earlier processes that had the same pid: pids are
    reused (pid_max is 32768 here) and Ray leaves its session folders behind."""
    found = []
    for path in RAY_TEMP.glob(f"session_*_{pid}"):
        stamp = re.fullmatch(rf"session_(\d{{4}}-\d\d-\d\d_\d\d-\d\d-\d\d_\d+)_{pid}", path.name)
        if stamp and datetime.strptime(stamp.group(1), "%Y-%m-%d_%H-%M-%S_%f").timestamp() >= since - 1:
            found.append(path)
    return found


LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}


def listening_sockets(pids) -> list[tuple[int, str]]:
    """(pid, 'HEXADDR:PORT') of every TCP socket in LISTEN state held by the given processes."""
    owner = {}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                owner[link[8:-1]] = pid
    found = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in owner:   # 0A: LISTEN
                found.append((owner[fields[9]], fields[1]))
    return found


def not_loopback(sockets) -> list[tuple[int, str]]:
    return [(pid, address) for pid, address in sockets if address.split(":")[0] not in LOOPBACK]


def files_containing(roots, needle: bytes) -> list[Path]:
    hits = []
    for root in roots:
        for path in Path(root).rglob("*"):
            if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
                hits.append(path)
    return hits


def kill_pids(pids) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def reap(driver: "subprocess.Popen", timeout: float, family=()) -> list[str]:
    """End a driver started in a session of its own (start_new_session): SIGKILL its process group
    if it still runs, wait up to `timeout` s for the processes of the Ray session it started (and of
    `family`) to go, SIGKILL those left and return them as 'pid cmdline' (for the test to fail on)."""
    if driver.poll() is None:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    wait_until(lambda: not alive(family) and not processes_of_ray_session(driver.pid), timeout=timeout)
    left = alive(family) + alive(processes_of_ray_session(driver.pid))
    kill_pids(int(line.split()[0]) for line in left)
    return left


def processes(where) -> list[str]:
    """'pid cmdline' of every live (not zombie) process for which where(pid, cmdline) holds."""
    return [f"{pid} {cmd[:160]}" for pid, (_ppid, _pgid, state, cmd) in proc_table().items()
            if state != "Z" and where(pid, cmd)]


def start_into_closed_head(command: list[str], **popen) -> "subprocess.Popen":
    """Start `command` with its stdout a real pipe into `head -n 1` that has already read its line
    and exited, so the command's first write to stdout finds no reader (EPIPE) every time: what
    `command | head -n 1` does once head has what it wants, without the race of when head exits.
    The Popen's stderr is a pipe."""
    import subprocess
    read, write = os.pipe()
    try:
        head = subprocess.Popen(["head", "-n", "1"], stdin=read, stdout=subprocess.DEVNULL)
        os.close(read)
        os.write(write, b"the line head wants\n")
        head.wait(timeout=30)   # now the pipe has no reader
        return subprocess.Popen(command, stdout=write, stderr=subprocess.PIPE, text=True, **popen)
    finally:
        os.close(write)
