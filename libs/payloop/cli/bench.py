"""`payloop bench`: the benchmark of issue 9 on the embedded stack (`bench/suite.py`; docs/benchmarks.md).

The suite is a script of the repository, not of the installed package (it starts the whole platform
and its data generators), so this command runs it with the same interpreter.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from payloop.cli.errors import CliError

PARTS = ("raw", "freshness", "hop", "autopay", "ingestion", "aging")


def bench(args) -> int:
    script = Path(args.root) / "bench" / "suite.py"
    if not script.exists():
        raise CliError(f"no benchmark at {script} (run from the repository root, or give --root)")
    unknown = [p for p in args.parts if p not in PARTS]
    if unknown:
        raise CliError(f"unknown part(s) {', '.join(unknown)}; parts: {', '.join(PARTS)}")
    command = [sys.executable, str(script), *(["--quick"] if args.quick else []),
               *(["--only", *args.parts] if args.parts else []), *(["--keep"] if args.keep else [])]
    return subprocess.run(command).returncode
