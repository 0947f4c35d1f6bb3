"Smoke test of bench/deviation.py: the fast sweep and the naive one agree, and the rigorous bound holds."
import json, os, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

@pytest.mark.slow
def test_bench_deviation_smoke():
    out = subprocess.run([sys.executable, str(ROOT/"bench"/"deviation.py"), "--models", "lenet_300_100", "--n", "200",
                          "--amounts", "0.2", "0.6", "--threads", "1"],
                         capture_output=True, text=True, cwd=ROOT, env=os.environ, check=True).stdout
    r = json.loads(out)["lenet_300_100"]
    assert r["agree_1e-6"] and r["rigorous_holds"] and r["points"] == 6
