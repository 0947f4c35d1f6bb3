"""The run store under stress: kill -9 part-way and resume, corrupt folders, failing runs, a Dask executor,
bad grid files, and the `netdeviation` command line. A toy template notebook keeps every run to a kernel start;
one uninterrupted reference sweep is shared by the tests that compare against it."""
import json, os, shutil, signal, socket, subprocess, sys, time
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from netdeviation.cli import main
from netdeviation.sweeps import BrokenRunsWarning, collect, load_grid, problem_runs, run_grid_file, run_id, run_state, run_sweep

CLI = Path(sys.executable).parent/"netdeviation"
GRID, FIXED = {"x": [1, 2, 3, 4]}, {"sleep": 0.5}


def _notebook(path:Path, parameters:str, body:str, setup:str="from netdeviation.sweeps import save_result")->Path:
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nb.cells = [nbformat.v4.new_code_cell(setup), nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(body)]
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="session")
def toy(tmp_path_factory)->Path:
    "A template: squares `x`, optionally sleeps first or fails, and saves one number and two rows (or waits: `TOY_HOLD`)."
    return _notebook(tmp_path_factory.mktemp("toy")/"toy.ipynb", "x = 1.0\nsleep = 0.0\nfail = False\nresult_path = None",
                     "time.sleep(sleep)\n" + TOY_HOLD + "if fail: raise ValueError(f'x={x} was asked to fail')\n"
                     "save_result(result_path, square=x**2, rows=[{'k': k, 'kx': k*x} for k in (1, 2)])",
                     "import glob, os, time\nfrom netdeviation.sweeps import save_result")

# With TOY_HOLD=n in its environment, a run that starts after n runs of its sweep finished waits (at most 10 min) to be killed.
TOY_HOLD = ("if len(glob.glob('../*/metrics.json')) >= int(os.environ.get('TOY_HOLD', 1e9)):\n"
            "    for _ in range(6000): time.sleep(0.1)\n")


@pytest.fixture(scope="session")
def reference(toy, tmp_path_factory)->Path:
    "The runs folder of one uninterrupted sweep of GRID."
    root = tmp_path_factory.mktemp("reference")
    res = run_sweep(toy, GRID, FIXED, name="s", runs_dir=root, workers=2, progress=False)
    assert res.count("done") == 4 and not res.errors
    return root


def _stable(df:pd.DataFrame)->pd.DataFrame:
    "A collected table without the columns that depend on timing, in a fixed order."
    return df.drop(columns=[c for c in ("elapsed_s",) if c in df]).sort_values(["run_id"] + [c for c in ("k",) if c in df]).reset_index(drop=True)


def _same_tables(a:Path, b:Path):
    for level in ("runs", "rows"): pd.testing.assert_frame_equal(_stable(collect(a, level=level)), _stable(collect(b, level=level)))


# ---------------------------------------------------------------- kill -9 and resume

SWEEP_SCRIPT = f"""
import sys
from netdeviation.sweeps import run_sweep
if __name__ == "__main__":  # the process pool starts workers with spawn, which imports this file again
    run_sweep(sys.argv[1], {GRID!r}, {FIXED!r}, name="s", runs_dir=sys.argv[2], workers=1, progress=False)
"""

def test_kill9_then_resume_equals_uninterrupted(toy, reference, tmp_path):
    runs = tmp_path/"runs"
    (script := tmp_path/"sweep.py").write_text(SWEEP_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(toy), str(runs)], start_new_session=True,
                            env={**os.environ, "TOY_HOLD": "2"})  # the third run waits, however slow the machine
    deadline = time.time() + 300  # a guard against a hang only: the runs themselves wait for the kill
    while len(list((runs/"s").glob("*/params.json"))) < 3:
        assert proc.poll() is None and time.time() < deadline, "the sweep ended, or hung, before its third run started"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep, its worker and its in-flight run: a crash, mid-run
    proc.wait()
    done_before = len(list((runs/"s").glob("*/metrics.json")))
    assert done_before == 2, f"{done_before} runs finished: the third should still have been waiting"
    res = run_sweep(toy, GRID, FIXED, name="s", runs_dir=runs, workers=2, progress=False)
    assert res.count("skipped") == done_before and res.count("done") == 4 - done_before and not res.errors
    got = collect(runs, level="runs")
    assert len(got) == 4 and got.run_id.is_unique
    _same_tables(runs, reference)


RACE_PARAMS = "x = 1.0\nsleep = 0.0\nlog_dir = ''\nresult_path = None"
RACE_BODY = """
import fcntl, os, time
from pathlib import Path
log = Path(log_dir)/str(int(x))
fd = os.open(f"{log}.lock", os.O_CREAT | os.O_RDWR)   # the test's own witness: held by whoever executes run x
try: fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB); alone = "alone"
except BlockingIOError: alone = "OVERLAP"
with open(f"{log}.log", "a") as f: f.write(f"start {os.getpid()} {alone}\\n")
time.sleep(sleep)
with open(f"{log}.log", "a") as f: f.write(f"end {os.getpid()}\\n")
save_result(result_path, square=x**2)
"""
RACE_SCRIPT = """
import sys
from netdeviation.sweeps import run_sweep
if __name__ == "__main__":
    run_sweep(sys.argv[1], {"x": [1, 2, 3, 4, 5, 6]}, {"sleep": 3.0, "log_dir": sys.argv[3]}, name="race", runs_dir=sys.argv[2],
              workers=2, progress=False)
"""

def _started_not_ended(logs:Path)->int:
    return sum(1 for f in logs.glob("*.log") if f.read_text().count("start") > f.read_text().count("end"))

def _left_behind(*folders:Path)->list[str]:
    "Processes (not this one) whose working directory is one of `folders` or inside it: the killed sweep's workers and kernels."
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid(): continue
        try: cwd, state = Path(os.readlink(d/"cwd")), (d/"stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError: continue
        if state != "Z" and any(cwd == f or f in cwd.parents for f in folders):
            cmd = (d/"cmdline").read_bytes().replace(bytes(1), b" ").decode(errors="replace")
            found.append(f"{d.name} ({cmd[:80]})")
    return found

@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="needs /proc (Linux)")
def test_kill9_of_the_main_process_only_then_resume_at_once(tmp_path):
    "Only the sweep's main process is killed: its workers end with it, the resume runs nothing twice, nothing overlaps."
    toy = _notebook(tmp_path/"race.ipynb", RACE_PARAMS, RACE_BODY, "from netdeviation.sweeps import save_result")
    runs, logs, home = tmp_path/"runs", tmp_path/"logs", tmp_path/"home"
    logs.mkdir(); home.mkdir()
    (script := tmp_path/"race.py").write_text(RACE_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(toy), str(runs), str(logs)], cwd=home, start_new_session=True)
    deadline = time.time() + 300
    while not (list((runs/"race").glob("*/metrics.json")) and _started_not_ended(logs)):
        assert proc.poll() is None and time.time() < deadline, "the sweep ended (or hung for 300 s) before it could be killed"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # the main process alone: its workers, kernels and resource tracker are not signalled
    proc.wait()
    sealed = {d.parent.name for d in (runs/"race").glob("*/metrics.json")}
    res = run_sweep(toy, {"x": [1, 2, 3, 4, 5, 6]}, {"sleep": 3.0, "log_dir": str(logs)}, name="race", runs_dir=runs,
                    workers=2, progress=False)
    assert not res.errors and res.count("done") + res.count("skipped") == 6, res
    assert res.count("skipped") >= len(sealed) >= 1
    text = {f.stem: f.read_text() for f in logs.glob("*.log")}
    assert not [k for k, t in text.items() if "OVERLAP" in t], text          # never two executions of one run at once
    by_id = {run_id({"x": float(x), "sleep": 3.0, "log_dir": str(logs)}): str(x) for x in range(1, 7)}
    assert all(text[by_id[r]].count("start") == 1 for r in sealed), text     # a finished run is never executed again
    assert all(text[k].count("end") >= 1 for k in text) and len(text) == 6
    assert sorted(collect(runs, level="runs").square) == [float(x*x) for x in range(1, 7)]
    deadline = time.time() + 120
    while (alive := _left_behind(home, runs)) and time.time() < deadline: time.sleep(0.5)
    assert not alive, f"processes of the killed sweep still alive 120 s after the kill (workers must die with their parent): {alive}"


# ---------------------------------------------------------------- corrupt folders, failing runs

DAMAGES = {1: "truncate", 2: "edit_value", 3: "edit_params", 4: "delete_notebook"}

def _damage(d:Path, how:str):
    m = d/"metrics.json"
    if how == "truncate": m.write_text(m.read_text()[:40])
    if how == "edit_value": m.write_text(m.read_text().replace('"square": 4.0', '"square": 5.0'))
    if how == "edit_params": (d/"params.json").write_text('{"sleep": 0.5, "x": 7.0}')
    if how == "delete_notebook": (d/"run.ipynb").unlink()

def test_corrupt_runs_are_detected_and_rerun(toy, reference, tmp_path):
    shutil.copytree(reference, runs := tmp_path/"runs")
    for x, how in DAMAGES.items():
        _damage(d := runs/"s"/run_id({**FIXED, "x": float(x)}), how)
        assert run_state(d) == "broken", how
    (runs/"s"/"0123456789ab").mkdir()  # a folder left by a run killed before it wrote anything
    with pytest.warns(BrokenRunsWarning, match="5 run folder") as caught:
        assert collect(runs, level="runs").empty  # a broken run is never collected, and never silently left out
    assert "s/0123456789ab (no metrics.json" in str(caught[0].message)
    assert sorted(problem_runs(runs).state) == ["broken"]*5
    res = run_sweep(toy, GRID, FIXED, name="s", runs_dir=runs, workers=2, progress=False)
    assert res.count("done") == 4
    assert problem_runs(runs).run_id.tolist() == ["0123456789ab"]  # not a run of the grid: left as it is
    (runs/"s"/"0123456789ab").rmdir()
    _same_tables(runs, reference)


def test_failing_run_is_recorded_and_the_sweep_goes_on(toy, tmp_path, capsys):
    "Through the command line: one run raises, the others finish; the error is on record; --no-retry-failed skips it."
    (tmp_path/"toy.ipynb").write_bytes(toy.read_bytes())
    (g := tmp_path/"g.json").write_text(json.dumps({"notebook": "toy.ipynb", "grid": [{"x": [1, 2]}, {"x": [3], "fail": [True]}]}))
    cmd = ["sweep", str(g), "--runs-dir", str(tmp_path/"runs"), "--workers", "2", "--quiet"]
    assert main(cmd) == 1
    out = capsys.readouterr()
    assert "2 done, 1 failed" in out.out and "asked to fail" in out.err
    bad = tmp_path/"runs"/"g"/run_id({"x": 3.0, "fail": True})
    rec = json.loads((bad/"metrics.json").read_text())
    assert rec["status"] == "error" and rec["error"]["type"] == "ValueError" and run_state(bad) == "failed"
    assert (bad/"run.ipynb").is_file()  # the executed notebook shows the failing cell
    t = collect(tmp_path/"runs", level="runs", failed=True).set_index("run_id")
    assert t.loc[bad.name, "status"] == "error" and "asked to fail" in t.loc[bad.name, "error"]
    assert len(collect(tmp_path/"runs", level="runs")) == 2
    assert main(cmd + ["--no-retry-failed"]) == 0 and "3 skipped" in capsys.readouterr().out


def test_a_relative_cache_folder_is_made_absolute_for_the_kernels(tmp_path, monkeypatch):
    "NETDEVIATION_CACHE=rel_cache: every kernel (which runs in its run folder) sees the folder meant, made absolute."
    nb = _notebook(tmp_path/"env.ipynb", "x = 1.0\nresult_path = None", "import os\nsave_result(result_path, cache=os.environ['NETDEVIATION_CACHE'])")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NETDEVIATION_CACHE", "rel_cache")
    assert run_sweep(nb, {"x": [1]}, runs_dir="runs", workers=1, progress=False).count("done") == 1
    assert collect(tmp_path/"runs", level="runs").cache.tolist() == [str(tmp_path.resolve()/"rel_cache")]


# ---------------------------------------------------------------- the lock

LOCK_RACE = """
import json, sys, time
from pathlib import Path
from netdeviation.sweeps import SweepLockedError, lock_folder
root, me = Path(sys.argv[1]), Path(sys.argv[2])
me.with_suffix(".ready").touch()
while not (root.parent/"go").exists(): time.sleep(0.001)
try:
    with lock_folder(root):
        t0 = time.monotonic(); time.sleep(0.2); rec = {"held": [t0, time.monotonic()]}  # one clock for all processes
except SweepLockedError as e: rec = {"refused": str(e)}
me.write_text(json.dumps(rec))
"""

def test_a_stale_lock_is_taken_over_by_one_process_at_a_time(tmp_path):
    "Eight processes race for a lock left by a dead process: the times they held it never overlap; the others are told who holds it."
    root, n = tmp_path/"s", 8
    root.mkdir()
    ended = subprocess.Popen(["true"]); ended.wait()
    (root/".lock").write_text(f"{socket.gethostname()} {ended.pid}")  # left behind by a process that has ended
    (script := tmp_path/"race.py").write_text(LOCK_RACE)
    procs = [subprocess.Popen([sys.executable, str(script), str(root), str(tmp_path/f"p{i}.json")]) for i in range(n)]
    deadline = time.time() + 300
    while len(list(tmp_path.glob("*.ready"))) < n:
        assert time.time() < deadline and all(p.poll() is None for p in procs), "a racer ended before the start"
        time.sleep(0.05)
    (tmp_path/"go").touch()
    assert all(p.wait(timeout=300) == 0 for p in procs)
    recs = [json.loads((tmp_path/f"p{i}.json").read_text()) for i in range(n)]
    held = sorted(r["held"] for r in recs if "held" in r)
    assert held and all(a[1] <= b[0] for a, b in zip(held, held[1:])), held
    pids = {str(p.pid) for p in procs}
    assert all(r["refused"].split("(process ")[1].split()[0] in pids for r in recs if "refused" in r)
    assert not (root/".lock").exists()


# ---------------------------------------------------------------- Dask

def test_dask_local_cluster_runs_the_same_sweep(toy, reference, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster, \
         distributed.Client(cluster) as client:
        res = run_sweep(toy, GRID, FIXED, name="s", runs_dir=tmp_path, executor=client.get_executor(), progress=False)
    assert res.count("done") == 4 and not res.errors
    _same_tables(tmp_path, reference)


# ---------------------------------------------------------------- grid files

BAD_GRIDS = {
    "unknown_top_key.toml": ('notebook = "toy.ipynb"\n[grid]\nx = [1]\n[fixd]\nsleep = 1.0\n', "grid file: unknown keys ['fixd']"),
    "unknown_param.toml": ('notebook = "toy.ipynb"\n[grid]\nx = [1]\nlr = [0.1]\n', "lr: not a parameter of toy.ipynb"),
    "wrong_type.toml": ('notebook = "toy.ipynb"\n[grid]\nx = ["one"]\n', "x: expected float"),
    "wrong_type_fixed.json": ('{"notebook": "toy.ipynb", "grid": {"x": [1]}, "fixed": {"fail": "yes"}}', "fail: expected bool"),
    "empty_grid.toml": ('notebook = "toy.ipynb"\n[grid]\n', "grid: empty"),
    "empty_values.json": ('{"notebook": "toy.ipynb", "grid": {"x": []}}', "grid['x']: empty list"),
    "scalar_values.json": ('{"notebook": "toy.ipynb", "grid": {"x": 2}}', "grid['x']: expected a list of values"),
    "no_notebook.json": ('{"grid": {"x": [1]}}', "grid file: missing 'notebook'"),
    "bad_notebook.toml": ('notebook = "everything"\n[grid]\nx = [1]\n', "notebook: expected one of"),
    "missing_notebook.toml": ('notebook = "nope.ipynb"\n[grid]\nx = [1]\n', "notebook: no such file"),
    "broken.toml": ('notebook = "toy.ipynb"\n[grid\n', "grid file: "),
    "grid.yaml": ("notebook: toy.ipynb\n", "grid file: expected a .json or .toml file"),
}

@pytest.mark.parametrize("name", sorted(BAD_GRIDS))
def test_bad_grid_files_fail_before_anything_runs(toy, tmp_path, capsys, name):
    text, message = BAD_GRIDS[name]
    (tmp_path/"toy.ipynb").write_bytes(toy.read_bytes())
    (grid := tmp_path/name).write_text(text)
    with pytest.raises((ValueError, TypeError, FileNotFoundError)) as e: run_grid_file(grid, runs_dir=tmp_path/"runs", progress=False)
    assert message in str(e.value)
    assert main(["sweep", str(grid), "--runs-dir", str(tmp_path/"runs")]) == 2
    assert message in capsys.readouterr().err and not (tmp_path/"runs").exists()


def test_grid_file_union_and_fixed(toy, tmp_path):
    (tmp_path/"toy.ipynb").write_bytes(toy.read_bytes())
    (g := tmp_path/"u.toml").write_text('notebook = "toy.ipynb"\nname = "u"\n[[grid]]\nx = [1, 2]\n[[grid]]\nx = [3]\nfail = [true]\n[fixed]\nsleep = 0\n')
    spec = load_grid(g)
    assert spec.name == "u" and spec.runs == [{"sleep": 0.0, "x": 1.0}, {"sleep": 0.0, "x": 2.0}, {"sleep": 0.0, "x": 3.0, "fail": True}]


# ---------------------------------------------------------------- command line

@pytest.mark.parametrize("args", [[], ["reproduce"], ["sweep"], ["report"], ["baselines"]])
def test_help(args, capsys):
    with pytest.raises(SystemExit) as e: main([*args, "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and f"usage: netdeviation {args[0] if args else ''}".strip() in out
    if not args: assert all(c in out for c in ("reproduce", "sweep", "report", "baselines", "grid file"))
    if args == ["reproduce"]: assert "--quick" in out and "--full" in out


def test_console_script_gives_one_line_errors(toy, tmp_path):
    "The installed `netdeviation` command: a bad grid file is one line on stderr, exit status 2, nothing run."
    (tmp_path/"toy.ipynb").write_bytes(toy.read_bytes())
    (g := tmp_path/"bad.toml").write_text('notebook = "toy.ipynb"\n[grid]\nlr = [0.1]\n')
    r = subprocess.run([str(CLI), "sweep", str(g), "--runs-dir", str(tmp_path/"runs")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.startswith("netdeviation: error: lr: not a parameter of toy.ipynb") and "Traceback" not in r.stderr
    assert not (tmp_path/"runs").exists()


FAKE_BODY = """
k = {"random": 1, "clustered": 3}[method]
rows = [dict(model=model, method=method, seed=seed, amount=a, lhs=a*k, bound_paper=3*a*k, dev=-2*a*k, D=a/0.8, rel_dev=a*k/10,
             tightness=1/3, test_acc=0.97 - a**k, acc_drop=a**k) for a in (0.2, 0.4, 0.6, 0.8)]
save_result(result_path, rows=rows)
"""

def test_report_from_runs(tmp_path, capsys):
    "`netdeviation report` on a folder holding a net_deviation sweep (of a fake template): figures, tables, verdict."
    fake = _notebook(tmp_path/"fake.ipynb", 'model = "lenet_300_100"\nmethod = "random"\nseed = 0\nresult_path = None', FAKE_BODY)
    res = run_sweep(fake, {"method": ["random", "clustered"]}, name="net_deviation", runs_dir=tmp_path/"runs", workers=2, progress=False)
    assert res.count("done") == 2
    assert main(["report", str(tmp_path/"runs"), "--out", str(tmp_path/"out")]) == 0
    files = {p.name for p in (tmp_path/"out").iterdir()}
    assert {"fig3_1_D_lenet_300_100.png", "fig3_3_test_acc.png", "validity.csv", "validity.md", "clustered_vs_random.csv",
            "verdict.md", "README.md", "net_deviation_rows.csv"} <= files
    assert "the best predictor is" in (tmp_path/"out"/"verdict.md").read_text()
    assert main(["report", str(tmp_path/"nope")]) == 2 and "runs_dir: no such folder" in capsys.readouterr().err

# The real `netdeviation reproduce --quick`, end to end from a folder outside the clone, is in test_cli.py (slow).


def test_threaded_executor_after_jupyter_made_a_loop(toy, tmp_path):
    "Threads that inherit the caller's context (as Dask's threaded workers do) still run their notebooks side by side."
    import contextvars
    from concurrent.futures import ThreadPoolExecutor
    from jupyter_core.utils import ensure_event_loop
    class ContextThreads(ThreadPoolExecutor):
        def submit(self, fn, *args, **kwargs):
            return super().submit(contextvars.copy_context().run, fn, *args, **kwargs)
    ensure_event_loop()  # what any synchronous jupyter_client call in this process leaves behind (a kernel started, say)
    with ContextThreads(2) as pool:
        res = run_sweep(toy, GRID, FIXED, name="s", runs_dir=tmp_path, executor=pool, progress=False)
    assert res.count("done") == 4 and not res.errors, res.errors


def test_the_kernel_processs_own_stderr_goes_to_the_runs_log(tmp_path):
    "What the kernel process itself writes to stderr (as ipykernel's shutdown races do) lands in the run's kernel.log, not the sweep's terminal."
    nb = _notebook(tmp_path/"loud.ipynb", "x = 1\nresult_path = None",
                   "import os, sys\nos.write(sys.__stderr__.fileno(), b'kernel-process-noise\\n')\nsave_result(result_path, x=x)")
    (tmp_path/"g.toml").write_text(f'notebook = "{nb}"\nname = "loud"\n[grid]\nx = [1]\n')
    r = subprocess.run([CLI, "sweep", "g.toml", "--quiet", "--workers", "1"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "kernel-process-noise" not in r.stderr + r.stdout
    logs = list((tmp_path/"runs"/"loud").glob("*/kernel.log"))
    assert len(logs) == 1 and "kernel-process-noise" in logs[0].read_text()
    assert collect(tmp_path/"runs"/"loud").x.tolist() == [1]                       # the run itself is unaffected


def test_a_kernel_that_dies_before_answering_is_started_again(toy, tmp_path, monkeypatch):
    "A kernel that dies at start-up (its port taken meanwhile) is started again; one that always dies is recorded after KERNEL_STARTS tries."
    import papermill
    from netdeviation.sweeps import KERNEL_STARTS, execute_run
    real, calls = papermill.execute_notebook, []
    def died(*a, **k): calls.append(1); raise RuntimeError("Kernel died before replying to kernel_info")
    def flaky(*a, **k): return died() if not calls else (calls.append(1), real(*a, **k))[1]
    monkeypatch.setattr(papermill, "execute_notebook", flaky)
    rec = execute_run(toy, tmp_path/"once", {"x": 2.0})
    assert rec["status"] == "ok" and len(calls) == 2 and json.loads((tmp_path/"once"/"result.json").read_text())["square"] == 4.0
    calls.clear(); monkeypatch.setattr(papermill, "execute_notebook", died)
    rec = execute_run(toy, tmp_path/"always", {"x": 2.0})
    assert rec["status"] == "error" and "Kernel died" in rec["error"]["message"] and len(calls) == KERNEL_STARTS
    calls.clear(); monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **k: (calls.append(1), (_ for _ in ()).throw(RuntimeError("other")))[1])
    assert execute_run(toy, tmp_path/"other", {"x": 2.0})["status"] == "error" and len(calls) == 1  # any other error: no retry
