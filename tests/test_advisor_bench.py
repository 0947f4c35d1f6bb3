"Smoke test of bench/advisor.py, run tiny (--quick): one JSON object with every time and ratio, and the goals stated (no timing assertions)."
import importlib.util, json, os, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

@pytest.mark.slow
def test_bench_advisor_smoke(tmp_path):
    out = tmp_path/"advisor.json"
    printed = subprocess.run([sys.executable, str(ROOT/"bench"/"advisor.py"), "--models", "lenet_300_100", "--quick", "--quick-steps", "4",
                              "--n-train", "512", "--n-val", "200", "--repeats", "1", "--steps", "3", "--warmup", "1",
                              "--threads", "1", "--out", str(out)],
                             capture_output=True, text=True, cwd=ROOT, env=os.environ, check=True).stdout
    r = json.loads(printed)
    assert json.loads(out.read_text()) == r  # the file written atomically holds what was printed
    assert not list(tmp_path.glob(".*tmp"))
    m = r["lenet_300_100"]
    for k in ("measure_features_s", "advise_s", "step_s", "advise_fraction_of_step", "advise_fraction_of_epoch",
              "measure_features_fraction_of_step", "advise_with_features_pass_fraction_of_step", "measure_features_again_s",
              "measure_features_fraction_of_epoch", "measure_features_again_fraction_of_epoch"):
        assert isinstance(m[k], float) and m[k] >= 0, k
    assert m["advise_fraction_of_step"] == pytest.approx(m["advise_s"]/m["step_s"], rel=2e-3)
    assert m["advise_fraction_of_epoch"] == pytest.approx(m["advise_s"]/(m["step_s"]*m["steps_per_epoch"]), rel=2e-3)
    assert m["measure_features_fraction_of_epoch"] == pytest.approx(m["measure_features_s"]/(m["step_s"]*m["steps_per_epoch"]), rel=2e-3)
    assert (m["n_train"], m["n_val"], m["advise_repeats"], m["steps_timed"], m["steps_per_epoch"]) == (512, 200, 1, 3, 4)
    assert m["advice"]["status"] in ("none", "recovers", "unlikely") and m["original"].startswith("trained here")
    fc = m["forecaster"]
    if importlib.util.find_spec("netdeviation.forecast") is None:
        assert fc == {"update_s": None, "update_fraction_of_step": None, "updates": 0, "note": "forecast module absent"}
    else:
        assert isinstance(fc["update_s"], float) and fc["updates"] >= 1, fc
    ld = r["load_advisor"]  # a fresh process, an empty cache: it reads the shipped JSON and never refits
    assert ld["error"] is None and ld["refit"] is False and ld["same_advisor"] and ld["cache_files_written"] == 0
    assert isinstance(ld["first_load_s"], float) and ld["first_load_s"] >= 0 and ld["goal_s"] == 2.0
    g = r["goals"]
    assert isinstance(g["load_advisor_first_s_le_2"], bool) and isinstance(g["advise_fraction_of_epoch_le_0.10"]["lenet_300_100"], bool)
    assert isinstance(g["measure_features_fraction_of_epoch_le_0.10"]["lenet_300_100"], bool)
    assert g["goal_advise_fraction_of_epoch"] == 0.10
