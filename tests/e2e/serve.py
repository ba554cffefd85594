"""Run one service exactly as `python -m payloop_<name> serve` does, but in a consumer group of its own.

The end-to-end tests share the test session's broker with every other test, so each platform they start
consumes in groups named for its run (`<service>-e2e-<run>`): a restarted service resumes its own group's
offsets, and two platforms never split one group's partitions between them.

Usage: python serve.py <service> <run> serve --port N
"""
from __future__ import annotations

import importlib
import sys
from dataclasses import replace

from payloop.runtime import main

if __name__ == "__main__":
    name, run, *argv = sys.argv[1:]
    service = importlib.import_module(f"payloop_{name}.service").SERVICE
    main(replace(service, consumer_group=f"{name}-e2e-{run}"), argv)
