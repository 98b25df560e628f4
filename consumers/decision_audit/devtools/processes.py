"""Stopping the brokers the project starts (Tansu, Apache Kafka), the same way for both."""

from __future__ import annotations

import subprocess


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    """SIGTERM, then SIGKILL if ``proc`` has not exited after ``timeout`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def kill_process(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL, as a crash would, and reap it."""
    if proc is not None:
        proc.kill()
        proc.wait()
