"""Run every benchmark and print its figures."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

for script in (
    "stage_change_latency.py",
    "switch_latency.py",
    "verify_speed.py",
    "operator_memory.py",
):
    print(f"== {script}")
    runpy.run_path(str(HERE / script), run_name="__main__")
