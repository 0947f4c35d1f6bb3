"Smoke test of bench/explorer.py, run small (no fresh-cache runs, one thread): one JSON object with every time, ratio and table check, and the goals stated (no timing assertions)."
import json, os, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

@pytest.mark.slow
def test_bench_explorer_smoke(tmp_path):
    out = tmp_path/"explorer.json"
    printed = subprocess.run([sys.executable, str(ROOT/"bench"/"explorer.py"), "--first", "--updates", "old", "new_t1", "--out", str(out)],
                             capture_output=True, text=True, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=True).stdout
    r = json.loads(printed)
    assert json.loads(out.read_text()) == r and not list(tmp_path.glob(".*tmp"))  # written atomically: what was printed
    assert r["first"] == {} and r["goals"]["first_result_s_le_60"] == {}
    rows = r["updates"]["sequence"]
    assert [x["change"] for x in rows][:3] == ["first display", "method change", "slider step"]
    for x in rows:
        for v in ("old", "new_t1"): assert isinstance(x[v]["s"], float) and x[v]["s"] >= 0 and x[v]["shown"] == x["old"]["shown"]
        assert x["new_t1"]["same_numbers_as_old"] is True  # one thread here for both: the same numbers (notes may be reworded)
        assert x["new_t1"]["ratio_new_old"] == pytest.approx(x["new_t1"]["s"]/x["old"]["s"], rel=2e-3)
    assert "shown before: nothing computed" in rows[3]["new_t1"]["message"]  # back to a pruning seen
    assert set(r["goals"]["method_change_s_le_10"]) == {"old", "new_t1"}
