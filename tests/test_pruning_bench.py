"Smoke test of bench/pruning.py: one JSON object with a time for every method, and the exact Gram embedding."
import json, os, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

@pytest.mark.slow
def test_bench_pruning_smoke():
    out = subprocess.run([sys.executable, str(ROOT/"bench"/"pruning.py"), "--repeats", "1"],
                         capture_output=True, text=True, cwd=ROOT, env=os.environ, check=True).stdout
    r = json.loads(out)
    from netdeviation.pruning import METHODS
    for model in ("lenet_300_100", "lenet5_caffe"):
        assert set(METHODS) <= set(r["seconds_median"][model]) and all(v > 0 for v in r["seconds_median"][model].values())
    assert r["conv2_kmeans"]["same_partition"]
    assert isinstance(r["goal"]["clustered_lenet5_caffe_le_10s"], bool)
