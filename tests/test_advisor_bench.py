"Smoke test of bench/advisor.py, run tiny: one JSON object with every time and ratio, and the goal stated (no timing assertions)."
import json, os, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

@pytest.mark.slow
def test_bench_advisor_smoke(tmp_path):
    out = tmp_path/"advisor.json"
    printed = subprocess.run([sys.executable, str(ROOT/"bench"/"advisor.py"), "--models", "lenet_300_100", "--n-train", "512",
                              "--n-val", "200", "--repeats", "1", "--threads", "1", "--skip-load", "--out", str(out)],
                             capture_output=True, text=True, cwd=ROOT, env=os.environ, check=True).stdout
    r = json.loads(printed)
    assert json.loads(out.read_text()) == r  # the file written atomically holds what was printed
    m = r["lenet_300_100"]
    for k in ("measure_features_s", "advise_s", "advise_1thread_s", "epoch_s", "advise_fraction_of_epoch",
              "measure_features_fraction_of_epoch", "advise_with_features_pass_fraction_of_epoch"):
        assert isinstance(m[k], float) and m[k] >= 0, k
    assert (m["n_train"], m["n_val"], m["advise_repeats"]) == (512, 200, 1)
    assert m["advice"]["status"] in ("none", "recovers", "unlikely")
    assert r["load_advisor"] is None  # --skip-load
    assert r["goals"]["goal"] == 0.10 and isinstance(r["goals"]["advise_fraction_of_epoch_le_0.10"]["lenet_300_100"], bool)
