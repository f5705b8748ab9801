"""Commands piped into `head` end quietly: `archstudy schema | head`, `python -m trainables ... | head`.

When the reader of stdout goes away, Python raises BrokenPipeError at the next write (it ignores
SIGPIPE), and the interpreter's last flush at exit would print "Exception ignored ... BrokenPipeError"
besides. `quiet_on_broken_pipe` wraps a command's main(): on BrokenPipeError it points stdout (and
stderr, where it is the same broken pipe) at /dev/null and returns 141, the status a shell reports
for a process that SIGPIPE ended (128 + 13), like `yes | head`. The recipe is the one in Python's
signal module documentation; restoring SIGPIPE's default action instead would also kill the process
when one of its sockets breaks (Ray talks over sockets).
"""
from __future__ import annotations

import functools
import os
import sys

BROKEN_PIPE_EXIT = 141   # 128 + SIGPIPE


def _same_file(fd_a: int, fd_b: int) -> bool:
    try:
        a, b = os.fstat(fd_a), os.fstat(fd_b)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def silence_stdout() -> None:
    """Point stdout (and stderr, when it is the same pipe) at /dev/null, so that no later write or
    the flush at exit fails again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for stream in (sys.stdout, sys.stderr):
            try:
                fd = stream.fileno()
            except (AttributeError, OSError, ValueError):   # replaced by a test's StringIO
                continue
            if stream is sys.stdout or _same_file(fd, sys.stdout.fileno()):
                os.dup2(devnull, fd)
    except (AttributeError, OSError, ValueError):
        pass
    finally:
        os.close(devnull)


def quiet_on_broken_pipe(main):
    """Decorate a command's main(): its return value, or 141 and no traceback when the reader of
    stdout has gone (`| head`)."""
    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            code = main(*args, **kwargs)
            sys.stdout.flush()   # a write that fails here would otherwise fail again at exit
            return code
        except BrokenPipeError:
            silence_stdout()
            return BROKEN_PIPE_EXIT
    return wrapper
