"""Output piped into a reader that stops early (`invoke --list | head`) ends quietly, not in a traceback."""

from __future__ import annotations

import subprocess
import sys

WRITER = """
import sys
from mlopskit import console
if sys.argv[1] == "quiet":
    console.quiet_on_closed_output()
sys.stdin.read(1)  # the reader has gone by now
for _ in range(10_000):
    print("x" * 100)
"""


def run_into_a_closed_pipe(mode: str) -> subprocess.CompletedProcess[bytes]:
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, mode], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert child.stdout is not None and child.stdin is not None
    child.stdout.close()  # the reader stops before the writer starts
    _, stderr = child.communicate(b"go", timeout=60)
    return subprocess.CompletedProcess(child.args, child.returncode, b"", stderr)


def test_a_closed_pipe_ends_the_program_quietly() -> None:
    quiet = run_into_a_closed_pipe("quiet")
    assert quiet.stderr == b""
    assert quiet.returncode == 1


def test_without_it_python_prints_a_traceback() -> None:
    # The control: the same writer without the hook fails loudly, so the test above can fail.
    loud = run_into_a_closed_pipe("plain")
    assert b"BrokenPipeError" in loud.stderr
