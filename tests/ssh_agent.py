"""A real OpenSSH ssh-agent for tests: started on a private socket, holding the given keys, stopped after."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def running_agent(*keys: Path) -> Iterator[str]:
    """`ssh-agent -D` on a socket in a private temp dir, with `ssh-add` of each key; yields the socket path.

    Raises RuntimeError naming the missing program when OpenSSH's client tools are not installed.
    """
    program = shutil.which("ssh-agent")
    if program is None:
        raise RuntimeError("ssh-agent is not installed; install OpenSSH's client (apt-get install openssh-client)")
    with tempfile.TemporaryDirectory(prefix="agent-") as directory:
        socket = str(Path(directory) / "agent.sock")
        agent = subprocess.Popen([program, "-D", "-a", socket], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            while not Path(socket).exists():  # the agent creates it once it listens
                if agent.poll() is not None:
                    raise RuntimeError(f"ssh-agent exited: {agent.stderr.read().decode() if agent.stderr else ''}")
                time.sleep(0.02)
            for key in keys:
                subprocess.run(
                    ["ssh-add", str(key)], env={**os.environ, "SSH_AUTH_SOCK": socket}, check=True, capture_output=True
                )
            yield socket
        finally:
            agent.terminate()
            agent.wait()
