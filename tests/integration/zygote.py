"""A warm parent for servers that are killed and restarted many times.

Importing Nubis takes seconds; a test that kills the control plane at fifty points
would spend minutes importing. This process imports it once, then forks a fresh
``nubis serve`` for each request: a real separate process (it dies by itself, its
memory and threads are its own), started in a fraction of a second.

Protocol on stdin/stdout, one JSON object per line: ``{"env": {...}, "log": path}``
answers ``{"pid": n}``; when a child ends, ``{"exit": pid, "code": c}``.
"""

from __future__ import annotations

import json
import os
import sys
import threading

import nubis.api.app  # noqa: F401 - imported once, before any fork
import nubis.cli.main
import nubis.platform  # noqa: F401

_out = threading.Lock()


def say(message: dict) -> None:
    with _out:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()


def serve(env: dict[str, str], log: str) -> None:
    """In the child: become the server, never return."""
    os.setsid()
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.environ.clear()
    os.environ.update(env)
    code = 0
    try:
        nubis.cli.main.app(["serve"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        code = 1
    os._exit(code)


def reap() -> None:
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            threading.Event().wait(0.1)
            continue
        say({"exit": pid, "code": os.waitstatus_to_exitcode(status)})


def main() -> None:
    threading.Thread(target=reap, daemon=True).start()
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            serve(request["env"], request["log"])
        say({"pid": pid})


if __name__ == "__main__":
    main()
