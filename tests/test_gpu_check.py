"""bench/gpu_check.py runs where there is no GPU too (`--device cpu --quick`), so every code path of the GPU check is
exercised before a GPU machine runs it."""

import json
import subprocess
import sys
from pathlib import Path


SCRIPT = Path(__file__).parent.parent / "bench" / "gpu_check.py"


def test_gpu_check_runs_its_sections_on_cpu(tmp_path):
    output = tmp_path / "gpu_check.json"
    result = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--skip-examples",
                             "--output", str(output)], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    rows = json.loads(output.read_text())["rows"]
    assert {row["target"] for row in rows} == {"gpu-1", "gpu-2", "gpu-4", "gpu-5"}
    checks = [row for row in rows if row["target"] in ("gpu-1", "gpu-2")]
    assert checks and all(row["met"] for row in checks), checks
    speed = [row for row in rows if row["target"] in ("gpu-4", "gpu-5") and row["peer"] is not None]
    assert len(speed) == 3 and all(row["ours"] > 0 and row["peer"] > 0 for row in speed)
