"""Shared helpers: run `reference conformance ...` as a user would, and read its lines."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
BROKEN_CORE = [sys.executable, str(HERE / "broken_core.py")]
PROJECT_CORE = [sys.executable, "-m", "reference", "worker"]
LINE = re.compile(r"^(PASS|FAIL) ([\w.]+)(?::| \()")


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str

    @property
    def checks(self) -> dict[str, str]:
        """Check name -> PASS or FAIL, from the output lines."""
        found: dict[str, str] = {}
        for line in self.stdout.splitlines():
            match = LINE.match(line)
            if match:
                found[match.group(2)] = match.group(1)
        return found

    def line(self, name: str) -> str:
        for line in self.stdout.splitlines():
            match = LINE.match(line)
            if match and match.group(2) == name:
                return line
        raise AssertionError(f"no line for {name}:\n{self.stdout}")

    @property
    def summary(self) -> str:
        return self.stdout.strip().splitlines()[-1]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFERENCE_")}
    return {**env, **extra}


def conformance(*args: str, timeout: float = 180) -> Outcome:
    done = subprocess.run([sys.executable, "-m", "reference", "conformance", *args],
                          capture_output=True, text=True, timeout=timeout, env=clean_env())
    return Outcome(done.returncode, done.stdout, done.stderr)
