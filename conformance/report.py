"""What both runners share: named checks, one output line each, a summary, JUnit XML."""

from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO


class CheckFailed(Exception):
    """A check found the implementation breaking the contract; the message says how."""


@dataclass
class CheckResult:
    name: str
    ok: bool
    seconds: float
    reason: str = ""
    details: str = ""  # more text for the JUnit file (log tails)


@dataclass
class Report:
    """Runs checks one at a time, prints a line for each, and keeps the results."""

    suite: str
    out: TextIO
    results: list[CheckResult] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    notes: list[str] = field(default_factory=list)  # how the run went, for the JUnit file

    def add(self, result: CheckResult) -> None:
        self.results.append(result)
        if result.ok:
            self.out.write(f"PASS {result.name} ({result.seconds:.1f} s)\n")
        else:
            self.out.write(f"FAIL {result.name}: {result.reason}\n")
        self.out.flush()

    def fail(self, name: str, reason: str, details: str = "") -> None:
        self.add(CheckResult(name, False, 0.0, one_line(reason), details))

    async def run(self, name: str, check: Callable[[], Awaitable[None]], *,
                  timeout_s: float) -> bool:
        """Run one check, bounded: a check that takes longer than `timeout_s` fails."""
        start = time.monotonic()
        try:
            async with asyncio.timeout(timeout_s):
                await check()
        except CheckFailed as exc:
            result = CheckResult(name, False, time.monotonic() - start, one_line(str(exc)))
        except TimeoutError:
            result = CheckResult(name, False, time.monotonic() - start,
                                 f"no outcome within {timeout_s:g} s")
        except Exception as exc:  # a check must never take the runner down with it
            result = CheckResult(name, False, time.monotonic() - start,
                                 one_line(f"{type(exc).__name__}: {exc}"))
        else:
            result = CheckResult(name, True, time.monotonic() - start)
        self.add(result)
        return result.ok

    @property
    def failed(self) -> list[CheckResult]:
        return [r for r in self.results if not r.ok]

    def summary(self) -> str:
        return (f"{len(self.results)} checks, {len(self.failed)} failed "
                f"({time.monotonic() - self.started:.1f} s)")

    def write_junit(self, path: str | Path) -> None:
        suite = ET.Element("testsuite", {
            "name": self.suite,
            "tests": str(len(self.results)),
            "failures": str(len(self.failed)),
            "errors": "0",
            "time": f"{sum(r.seconds for r in self.results):.3f}",
        })
        for r in self.results:
            case = ET.SubElement(suite, "testcase", {
                "classname": self.suite, "name": r.name, "time": f"{r.seconds:.3f}"})
            if not r.ok:
                failure = ET.SubElement(case, "failure", {"message": r.reason})
                failure.text = r.details or r.reason
        if self.notes:
            ET.SubElement(suite, "system-out").text = "\n".join(self.notes)
        ET.ElementTree(suite).write(str(path), encoding="utf-8", xml_declaration=True)


def one_line(text: str, limit: int = 400) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
