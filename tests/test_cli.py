"""The `netdeviation` command as a user meets it: from a folder outside the clone with the default, relative runs
folder; and bad input, which must give one line naming the parameter, an exit status that says what happened, and
never a traceback. The toy template and the fake net_deviation template come from test_sweeps."""
import json, os, shutil, socket, subprocess, sys
from pathlib import Path

import pandas as pd
import pytest

import netdeviation
from netdeviation.cli import DASK_TIMEOUT, EXIT_ERROR, EXIT_FAILED, EXIT_LOCKED, EXIT_OK, main
from netdeviation.sweeps import collect, lock_folder, run_id, run_sweep
from test_sweeps import FAKE_BODY, _notebook, toy  # noqa: F401  (toy is a fixture)

CLI = str(Path(sys.executable).parent/"netdeviation")
NOISE = ("Traceback", "KeyboardInterrupt", "[IPKernelApp]")


def _cli(args:list, capsys)->tuple[int, str, str]:
    "Run `main` in this process: (exit status, stdout, stderr), whether it returns or argparse exits."
    try: code = main([str(a) for a in args])
    except SystemExit as e: code = e.code
    out, err = capsys.readouterr()
    assert not any(n in err for n in NOISE), err
    return code, out, err


def _one_error(err:str)->str:
    "The one error line of stderr (argparse puts its usage line before it)."
    lines = [l for l in err.splitlines() if "error:" in l]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def grids(toy, tmp_path)->Path:
    "A folder with the toy template, a good grid file and a plain file (not a folder)."
    (tmp_path/"toy.ipynb").write_bytes(toy.read_bytes())
    (tmp_path/"g.toml").write_text('notebook = "toy.ipynb"\n[grid]\nx = [1, 2]\n')
    (tmp_path/"a_file").write_text("not a folder")
    return tmp_path


# ---------------------------------------------------------------- from a folder outside the clone

def test_sweep_with_the_default_runs_folder_outside_the_clone(grids, capsys, monkeypatch):
    "`netdeviation sweep g.toml` in a fresh folder: ./runs/g/<id>/ for every run, exit 0, no traceback, no kernel noise."
    r = subprocess.run([CLI, "sweep", "g.toml", "--quiet", "--workers", "2"], cwd=grids, capture_output=True, text=True, timeout=600)
    assert r.returncode == EXIT_OK, r.stderr[-3000:]
    assert not any(n in r.stderr for n in NOISE), r.stderr[-3000:]
    got = collect(grids/"runs"/"g", level="runs")
    assert sorted(got.square) == [1.0, 4.0] and "2 done" in r.stdout
    monkeypatch.chdir(grids)  # resumed from the same folder: the relative runs folder is the same one
    code, out, _ = _cli(["sweep", "g.toml", "--quiet"], capsys)
    assert code == EXIT_OK and "2 skipped" in out


def test_run_sweep_with_a_relative_runs_folder(toy, tmp_path, monkeypatch):
    "The API: `run_sweep(runs_dir='runs')` from another working directory writes under it, and says where."
    monkeypatch.chdir(tmp_path)
    res = run_sweep(toy, {"x": [3]}, runs_dir="runs", name="rel", workers=1, progress=False)
    assert res.count("done") == 1 and not res.errors and res.path == tmp_path.resolve()/"runs"/"rel"
    assert json.loads((tmp_path/"runs"/"rel"/run_id({"x": 3.0})/"result.json").read_text())["square"] == 9.0


SMALL_PLAN = {  # the quick plan's sweeps and report, at a size the default test run affords (the real one is slow, below)
    "retraining": dict(grid={"model": ["lenet_300_100"], "seed": [0], "method": ["random"], "amounts": [[0.3, 0.6, 0.9]]},
                       fixed={"max_epochs": 0.05, "n_prune": 200}),
    "net_deviation": dict(grid={"model": ["lenet_300_100"], "seed": [0]},
                          fixed={"methods": ["random", "clustered"], "amounts": [0.2, 0.6], "n_prune": 200})}

SMALL_REPRODUCE = f"""
import sys
import netdeviation.cli as cli
import netdeviation.report as report
if __name__ == "__main__":
    report.PLANS["quick"] = {SMALL_PLAN!r}
    sys.exit(cli.main(["reproduce", "--quick", "--quiet"]))
"""

def test_reproduce_with_the_default_folders_outside_the_clone(tmp_path):
    "`netdeviation reproduce --quick` (its main, on a smaller plan) in a fresh folder: ./runs/quick, ./results/quick, exit 0."
    (script := tmp_path/"small_reproduce.py").write_text(SMALL_REPRODUCE)
    r = subprocess.run([sys.executable, script.name], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert r.returncode == EXIT_OK, r.stderr[-3000:]
    assert not any(n in r.stderr for n in NOISE), r.stderr[-3000:]
    assert len(collect(tmp_path/"runs"/"quick", level="runs")) == 2
    assert {"fig3_1_D_lenet_300_100.png", "table3_1_connection.md", "validity.md", "verdict.md", "README.md"} <= \
           {p.name for p in (tmp_path/"results"/"quick").iterdir()}
    assert f"report in {tmp_path.resolve()/'results'/'quick'/'README.md'}" in r.stdout


@pytest.mark.slow
def test_reproduce_quick_outside_the_clone(tmp_path):
    "`netdeviation reproduce --quick` where a user who installed the package runs it: ./runs/quick and ./results/quick."
    r = subprocess.run([CLI, "reproduce", "--quick", "--quiet"], cwd=tmp_path, capture_output=True, text=True, timeout=1800)
    assert r.returncode == EXIT_OK, r.stderr[-3000:]
    assert not any(n in r.stderr for n in NOISE), r.stderr[-3000:]
    assert len(collect(tmp_path/"runs"/"quick", level="runs")) == 6
    files = {p.name for p in (tmp_path/"results"/"quick").iterdir()}
    assert {"fig3_1_D_lenet_300_100.png", "fig3_2_D_lenet5.png", "fig3_3_test_acc.png", "table3_1_connection.md",
            "table3_2_node.md", "validity.md", "verdict.md", "README.md"} <= files


# ---------------------------------------------------------------- --version and --help

def test_version(capsys):
    code, out, _ = _cli(["--version"], capsys)
    assert code == 0 and out.strip() == f"netdeviation {netdeviation.__version__}"


def test_help_lists_the_exit_statuses(capsys):
    code, out, _ = _cli(["--help"], capsys)
    assert code == 0 and "exit status:" in out and "--version" in out
    assert all(f"  {n} " in out for n in (EXIT_OK, EXIT_FAILED, EXIT_ERROR, EXIT_LOCKED))


# ---------------------------------------------------------------- bad input: one line, the parameter, the status

BAD_OPTIONS = {  # arguments -> the parameter the message must name
    "workers_zero": (["sweep", "g.toml", "--workers", "0"], "--workers"),
    "workers_negative": (["sweep", "g.toml", "--workers", "-2"], "--workers"),
    "workers_not_a_number": (["reproduce", "--workers", "two"], "--workers"),
    "timeout_negative": (["sweep", "g.toml", "--timeout", "-1"], "--timeout"),
    "timeout_inf": (["sweep", "g.toml", "--timeout", "inf"], "--timeout"),
    "runs_dir_is_a_file": (["sweep", "g.toml", "--runs-dir", "a_file"], "--runs-dir"),
    "reproduce_runs_dir_is_a_file": (["reproduce", "--runs-dir", "a_file"], "--runs-dir"),
    "out_is_a_file": (["reproduce", "--out", "a_file"], "--out"),
    "device_unknown": (["baselines", "--device", "tpu"], "--device"),
    "device_gpu_index": (["baselines", "--device", "cuda:99"], "--device"),
    "seed_negative": (["baselines", "--seed", "-1"], "--seed"),
    "config_unknown": (["baselines", "--config", "fast"], "--config"),
}

@pytest.mark.parametrize("case", sorted(BAD_OPTIONS))
def test_bad_options(grids, capsys, monkeypatch, case):
    "Refused by the parser before anything runs: exit 2, one error line that names the option."
    args, name = BAD_OPTIONS[case]
    monkeypatch.chdir(grids)
    code, _, err = _cli(args, capsys)
    assert code == EXIT_ERROR and name in _one_error(err)
    assert not (grids/"runs").exists()


BAD_GRIDS = {  # grid file text -> the parameter the message must name
    "name_dotdot.toml": ('notebook = "toy.ipynb"\nname = "../outside"\n[grid]\nx = [1]\n', "name: "),
    "name_separator.toml": ('notebook = "toy.ipynb"\nname = "a/b"\n[grid]\nx = [1]\n', "name: "),
    "name_absolute.json": ('{"notebook": "toy.ipynb", "name": "/tmp/elsewhere", "grid": {"x": [1]}}', "name: "),
    "nan_value.json": ('{"notebook": "toy.ipynb", "grid": {"x": [1, NaN]}}', "grid['x']: "),
    "inf_fixed.toml": ('notebook = "toy.ipynb"\n[grid]\nx = [1]\n[fixed]\nsleep = inf\n', "fixed['sleep']: "),
    "missing.toml": (None, "grid file: "),
    "device_unknown.toml": ('notebook = "net_deviation"\n[grid]\ndevice = ["tpu"]\n', "device: "),
}

@pytest.mark.parametrize("case", sorted(BAD_GRIDS))
def test_bad_grid_files(grids, capsys, monkeypatch, case):
    "A grid that would write outside the runs folder, or put NaN into JSON, is refused: exit 2, nothing written."
    text, name = BAD_GRIDS[case]
    if text is not None: (grids/case).write_text(text)
    monkeypatch.chdir(grids)
    code, _, err = _cli(["sweep", case], capsys)
    assert code == EXIT_ERROR and _one_error(err).startswith(f"netdeviation: error: {name}")
    assert not (grids/"runs").exists() and not (grids/"outside").exists() and not Path("/tmp/elsewhere").exists()


def test_unreachable_dask_is_time_boxed(grids, capsys, monkeypatch):
    "A Dask address where nothing listens: the client is told to give up sooner than its own default; one line naming --dask."
    distributed = pytest.importorskip("distributed")
    from dask import config
    from dask.utils import parse_timedelta
    asked, Client = [], distributed.Client
    monkeypatch.setattr(distributed, "Client", lambda *a, **k: asked.append(k) or Client(*a, **k))  # records, then connects
    monkeypatch.chdir(grids)
    code, _, err = _cli(["sweep", "g.toml", "--dask", "tcp://127.0.0.1:9"], capsys)
    assert code == EXIT_ERROR and "--dask: could not connect" in _one_error(err) and f"waited at most {DASK_TIMEOUT:g} s" in err
    assert [k.get("timeout") for k in asked] == [DASK_TIMEOUT], asked
    assert 0 < DASK_TIMEOUT < parse_timedelta(config.get("distributed.comm.timeouts.connect"), "s")
    assert not (grids/"runs").exists()


def test_bad_grid_is_reported_before_connecting_to_dask(grids, capsys, monkeypatch):
    distributed = pytest.importorskip("distributed")
    tried = []
    monkeypatch.setattr(distributed, "Client", lambda *a, **k: tried.append(a))
    (grids/"bad.toml").write_text('notebook = "toy.ipynb"\n[grid]\nlr = [0.1]\n')
    monkeypatch.chdir(grids)
    code, _, err = _cli(["sweep", "bad.toml", "--dask", "tcp://127.0.0.1:9"], capsys)
    assert code == EXIT_ERROR and "lr: not a parameter of toy.ipynb" in _one_error(err) and not tried


def test_workers_with_dask(grids, capsys, monkeypatch):
    monkeypatch.chdir(grids)
    code, _, err = _cli(["sweep", "g.toml", "--dask", "tcp://127.0.0.1:9", "--workers", "2"], capsys)
    assert code == EXIT_ERROR and "--workers" in _one_error(err)


def test_refused_lock_has_its_own_status_and_names_the_holder(grids, capsys, monkeypatch):
    "Another sweep holds the folder: exit 3, exactly one line, naming the holding process; nothing runs."
    monkeypatch.chdir(grids)
    with lock_folder(grids/"runs"/"g"):
        code, out, err = _cli(["sweep", "g.toml", "--quiet"], capsys)
    assert code == EXIT_LOCKED and err.count("\n") == 1
    assert err.startswith("netdeviation: error: runs_dir: ") and f"process {os.getpid()} on {socket.gethostname()}" in err
    assert not list((grids/"runs"/"g").glob("*/params.json"))


# ---------------------------------------------------------------- report: runs it could not read are named

@pytest.fixture(scope="module")
def fake_runs(tmp_path_factory)->Path:
    "A runs folder with two finished fake net_deviation runs and one that never wrote its metrics (made once)."
    d = tmp_path_factory.mktemp("fake_runs")
    fake = _notebook(d/"fake.ipynb", 'model = "lenet_300_100"\nmethod = "random"\nseed = 0\nresult_path = None', FAKE_BODY)
    res = run_sweep(fake, {"method": ["random", "clustered"]}, name="net_deviation", runs_dir=d/"runs", workers=2, progress=False)
    assert res.count("done") == 2
    (unfinished := d/"runs"/"net_deviation"/"abcdefabcdef").mkdir()
    (unfinished/"params.json").write_text('{"method": "magnitude"}')
    return d/"runs"


@pytest.fixture
def runs_with_a_broken_run(fake_runs, tmp_path)->Path:
    "A copy of `fake_runs` for one test."
    return shutil.copytree(fake_runs, tmp_path/"runs")


def test_report_names_the_runs_it_could_not_read(runs_with_a_broken_run, tmp_path, capsys):
    "The report is written from the readable runs; the unreadable one is named on stderr and in the README: exit 1."
    code, out, err = _cli(["report", runs_with_a_broken_run, "--out", tmp_path/"out"], capsys)
    assert code == EXIT_FAILED and out.strip() == str(tmp_path/"out"/"README.md")
    assert "net_deviation/abcdefabcdef left out of the report (broken: no metrics.json" in err
    readme = (tmp_path/"out"/"README.md").read_text()
    assert "## Runs left out" in readme and "abcdefabcdef" in readme
    assert len(pd.read_csv(tmp_path/"out"/"net_deviation_rows.csv").method.unique()) == 2


def test_report_with_no_readable_run_names_them(tmp_path, capsys):
    "Only a run that never wrote its metrics: exit 2, one line naming the run (it used to be an AttributeError)."
    (tmp_path/"runs"/"net_deviation"/"abcdefabcdef").mkdir(parents=True)
    code, _, err = _cli(["report", tmp_path/"runs"], capsys)
    line = _one_error(err)
    assert code == EXIT_ERROR and line.startswith("netdeviation: error: runs_dir: ") and "net_deviation/abcdefabcdef" in line
    assert not (tmp_path/"runs"/"report").exists()


def test_report_refuses_to_replace_a_folder_that_is_not_a_report(runs_with_a_broken_run, tmp_path, capsys):
    (mine := tmp_path/"mine").mkdir(); (mine/"notes.txt").write_text("keep me")
    code, _, err = _cli(["report", runs_with_a_broken_run, "--out", mine], capsys)
    assert code == EXIT_ERROR and "--out: " in _one_error(err) and "not a netdeviation report" in err
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_report_of_a_missing_folder(tmp_path, capsys):
    code, _, err = _cli(["report", tmp_path/"nope"], capsys)
    assert code == EXIT_ERROR and "runs_dir: no such folder" in _one_error(err)


def test_report_folder_is_written_whole(runs_with_a_broken_run, tmp_path, capsys, monkeypatch):
    "A report that fails part-way (a full disk) leaves the earlier report as it was; one that succeeds replaces it whole."
    runs, out = runs_with_a_broken_run, tmp_path/"out"
    assert _cli(["report", runs, "--out", out], capsys)[0] == EXIT_FAILED  # written; the broken run is named
    (out/"han.md").write_text("left by an earlier, full report")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    to_csv, calls = pd.DataFrame.to_csv, []
    def full_disk(self, *a, **k):
        calls.append(1)
        if len(calls) > 2: raise OSError(28, "No space left on device")
        return to_csv(self, *a, **k)
    monkeypatch.setattr(pd.DataFrame, "to_csv", full_disk)
    code, _, err = _cli(["report", runs, "--out", out], capsys)
    assert code == EXIT_ERROR and "No space left on device" in _one_error(err) and len(calls) == 3
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before      # the earlier report, untouched
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []  # no half-written folder beside it
    monkeypatch.setattr(pd.DataFrame, "to_csv", to_csv)
    assert _cli(["report", runs, "--out", out], capsys)[0] == EXIT_FAILED
    assert not (out/"han.md").exists() and (out/"README.md").read_text().startswith("# netdeviation reproduction")
