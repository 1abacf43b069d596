"""The results file of `make bench` (issue 6, section 5), as pydantic models.

    python benchmarks/schema.py benchmarks/results/2026-11-26-host.json   # exit 0 when it holds

At least: {"machine": {...}, "contenders": {"stackpatch": C, "manual_routine": C},
           "build_dir": {"files", "incremental_s", "fresh_clone_s"}}
with C = {"failed_requests", "total_requests", "longest_gap_s", "p50_ms", "p99_ms", "lead_time_s",
          "phases": {name: seconds}}, and stackpatch's C adds "overhead_share" (0-1).
Since issue 16 every contender also records "rate" (requests/s offered), "post_requests" (POSTs among
them) and "post_applied_twice" (POSTs that left two rows or more); files from before lack them.
Since issue 13: "contenders.competent_script" (a third contender, C), per contender "runs" (one object
per run with C's keys, stackpatch's with overhead_share, each with "max_latency_s"), "max_latency_s",
"range" ({figure: [min, max]}); C's own figures are the medians; top level "limit_s" (the limit line).
More keys are allowed everywhere (the file holds every figure).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class Machine(_Open):
    cores: int = Field(..., ge=1)
    memory_gib: float = Field(..., gt=0)
    docker_version: str = Field(..., min_length=1)
    kernel: str | None = None
    python: str | None = None
    hostname: str | None = None


class Figures(_Open):
    """The figures of one run of a command under load."""
    failed_requests: int = Field(..., ge=0)
    total_requests: int = Field(..., ge=0)
    longest_gap_s: float = Field(..., ge=0)
    p50_ms: float | None = Field(..., ge=0)   # None only when no request succeeded
    p99_ms: float | None = Field(..., ge=0)
    lead_time_s: float = Field(..., gt=0)
    phases: dict[str, float] = Field(...)
    rate: float | None = Field(None, gt=0)                 # requests/s offered (open loop)
    post_requests: int | None = Field(None, ge=0)          # of total_requests, the POSTs that write a row
    post_applied_twice: int | None = Field(None, ge=0)     # POSTs with more than one row; None: not counted

    @model_validator(mode="after")
    def _consistent(self) -> "Figures":
        if self.failed_requests > self.total_requests:
            raise ValueError("failed_requests is larger than total_requests")
        if self.post_requests is not None and self.post_requests > self.total_requests:
            raise ValueError("post_requests is larger than total_requests")
        if self.post_applied_twice is not None and self.post_applied_twice > (self.post_requests or 0):
            raise ValueError("post_applied_twice is larger than post_requests")
        if self.total_requests == 0:
            raise ValueError("total_requests is 0: the load generator did not run")
        succeeded = self.total_requests - self.failed_requests
        if (self.p50_ms is None or self.p99_ms is None) != (succeeded == 0):
            raise ValueError("p50_ms/p99_ms must be numbers when a request succeeded, null when none did")
        if self.p50_ms is not None and self.p99_ms is not None and self.p50_ms > self.p99_ms:
            raise ValueError("p50_ms is larger than p99_ms")
        bad = [k for k, v in self.phases.items() if v < 0]
        if bad:
            raise ValueError(f"phase durations must be >= 0: {', '.join(bad)}")
        if not self.phases:
            raise ValueError("phases is empty")
        return self


class Run(Figures):
    """One run of a contender (issue 13): the contender's keys, plus its slowest request."""
    max_latency_s: float | None = Field(None, ge=0)
    overhead_share: float | None = Field(None, ge=0, le=1)


class Contender(Figures):
    """A contender: its figures (the medians over its runs), and its runs since issue 13."""
    runs: list[Run] | None = None
    max_latency_s: float | None = Field(None, ge=0)   # the slowest request of any run
    range: dict[str, list[float]] | None = None       # [min, max] per figure over the runs

    @model_validator(mode="after")
    def _runs(self) -> "Contender":
        if self.runs is not None and not self.runs:
            raise ValueError("runs is empty")
        for k, v in (self.range or {}).items():
            if len(v) != 2 or v[0] > v[1]:
                raise ValueError(f"range of {k} must be [min, max]")
        return self


class StackpatchContender(Contender):
    overhead_share: float = Field(..., ge=0, le=1)

    @model_validator(mode="after")
    def _each_run_has_its_overhead(self) -> "StackpatchContender":
        if self.runs and any(r.overhead_share is None for r in self.runs):
            raise ValueError("every run of stackpatch needs overhead_share")
        return self


class Contenders(_Open):
    stackpatch: StackpatchContender
    manual_routine: Contender
    competent_script: Contender | None = None   # issue 13; files from before lack it


class BuildDir(_Open):
    files: int = Field(..., ge=1)
    incremental_s: float = Field(..., gt=0)
    fresh_clone_s: float = Field(..., gt=0)


class Results(_Open):
    machine: Machine
    contenders: Contenders
    build_dir: BuildDir
    limit_s: float | None = Field(None, gt=0)   # issue 13: the limit line (files from before lack it)


def validate(data: dict[str, Any] | str | os.PathLike) -> Results:
    """Parse and check a results dict or file; raises pydantic.ValidationError when it does not hold."""
    if not isinstance(data, dict):
        data = json.loads(Path(data).read_text(encoding="utf-8"))
    return Results.model_validate(data)


def contender_figures(summary: dict[str, Any], phases: dict[str, Any], lead_time_s: float,
                      overhead_share: float | None = None, **extra: Any) -> dict[str, Any]:
    """One contender's figures from a loadgen `summarize()` and its phases (`{name: seconds}` or
    `{name: [start, end]}`)."""
    durations = {k: round(float(v[1]) - float(v[0]), 3) if isinstance(v, (list, tuple)) else round(float(v), 3)
                 for k, v in phases.items()}
    c = {k: summary[k] for k in ("failed_requests", "total_requests", "longest_gap_s", "p50_ms", "p99_ms")}
    c.update(lead_time_s=round(lead_time_s, 3), phases=durations)
    if overhead_share is not None:
        c["overhead_share"] = round(overhead_share, 4)
    c.update(extra)
    return c


def machine_info() -> dict[str, Any]:
    """This machine, for the results file and the README: cores, memory, Docker version."""
    mem_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    try:
        docker = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True,
                                text=True, timeout=20).stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        docker = "unknown"
    return {"cores": os.cpu_count() or 1, "memory_gib": round(mem_kib / 1024 / 1024, 1) or 0.1,
            "docker_version": docker, "kernel": platform.release(), "python": platform.python_version(),
            "hostname": platform.node()}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python benchmarks/schema.py RESULTS.json", file=sys.stderr)
        return 2
    try:
        validate(args[0])
    except (OSError, ValueError, ValidationError) as e:
        print(f"{args[0]}: does not hold:\n{e}", file=sys.stderr)
        return 1
    print(f"{args[0]}: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
