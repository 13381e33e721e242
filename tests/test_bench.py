"""benchmarks/bench.py runs: its figures are printed, never asserted on (no timing here)."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ab_times_another_checkout_on_worker_processes(tmp_path):
    # the other checkout's worker processes import its engine by name: that name was this process's alone
    bench = [sys.executable, str(ROOT / "benchmarks" / "bench.py"), "--nets", "quick", "--batch", "16",
             "--rounds", "1", "--steps", "1", "--workers", "2", "--parallel", "processes", "--ab", str(ROOT)]
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    done = subprocess.run(bench, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TMPDIR": str(scratch)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "median ratio: step" in done.stdout, done.stdout
    assert not list(scratch.iterdir()), "the link to the other checkout is removed at the end"
