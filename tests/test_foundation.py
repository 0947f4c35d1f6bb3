"Foundation checks that are awkward as notebook lessons: data folders on disk, the package matching its notebooks."
import gzip, os, shutil, stat, subprocess, sys
from pathlib import Path

import pytest
import torch

from netdeviation.data import DataError, load_mnist, find_data_dir

ROOT = Path(__file__).resolve().parents[1]
RAW = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]

@pytest.fixture(scope="module")
def source_root():
    root, _ = find_data_dir()
    if not (root/"MNIST"/"raw"/RAW[0]).exists(): pytest.skip("MNIST not available (set NETDEVIATION_DATA)")
    return root

def _copy_raw(src, dst, files=RAW):
    (dst/"MNIST"/"raw").mkdir(parents=True)
    for f in files: shutil.copy(src/"MNIST"/"raw"/f, dst/"MNIST"/"raw"/f)

def _read_only(path):
    for p in [path, *path.rglob("*")]: p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))

def test_read_only_folder_loads(source_root, tmp_path):
    _copy_raw(source_root, tmp_path)
    _read_only(tmp_path)
    d = load_mnist(tmp_path)
    assert d.x_val.shape == (5000, 1, 28, 28) and d.y_test.shape == (10000,)
    assert sorted(p.name for p in (tmp_path/"MNIST"/"raw").iterdir()) == sorted(RAW)  # nothing written

def test_env_var_is_used(source_root, monkeypatch, tmp_path):
    monkeypatch.setenv("NETDEVIATION_DATA", str(tmp_path/"nowhere"))
    with pytest.raises(DataError, match="nowhere"): load_mnist()

def test_missing_folder_says_where_and_how(tmp_path):
    with pytest.raises(DataError) as e: load_mnist(tmp_path/"empty")
    msg = str(e.value)
    assert str(tmp_path/"empty") in msg and "NETDEVIATION_DATA" in msg

def test_truncated_images_are_reported(source_root, tmp_path):
    _copy_raw(source_root, tmp_path)
    img = tmp_path/"MNIST"/"raw"/RAW[2]
    img.write_bytes(img.read_bytes()[:100_000])
    with pytest.raises(DataError, match="MNIST"): load_mnist(tmp_path)

def test_wrong_label_count_is_reported(source_root, tmp_path):
    _copy_raw(source_root, tmp_path)
    lab = tmp_path/"MNIST"/"raw"/RAW[3]
    raw = bytearray(lab.read_bytes())
    raw[4:8] = (5000).to_bytes(4, "big")  # header says 5,000 labels
    lab.write_bytes(bytes(raw[:8 + 5000]))
    with pytest.raises(DataError, match="corrupt|unreadable"): load_mnist(tmp_path)

def test_package_matches_notebooks(tmp_path):
    "nbdev_export of the committed notebooks reproduces netdeviation/ exactly."
    for f in ("settings.ini", "setup.py", "README.md"): shutil.copy(ROOT/f, tmp_path/f)
    shutil.copytree(ROOT/"nbs", tmp_path/"nbs", ignore=shutil.ignore_patterns(".ipynb_checkpoints", "_*"))
    (tmp_path/"netdeviation").mkdir()
    shutil.copy(ROOT/"netdeviation"/"__init__.py", tmp_path/"netdeviation"/"__init__.py")
    exe = Path(sys.executable).with_name("nbdev_export")
    subprocess.run([str(exe)], cwd=tmp_path, check=True, capture_output=True)
    made = {p.relative_to(tmp_path/"netdeviation"): p.read_text() for p in (tmp_path/"netdeviation").rglob("*.py")}
    have = {p.relative_to(ROOT/"netdeviation"): p.read_text() for p in (ROOT/"netdeviation").rglob("*.py")}
    assert made.keys() == have.keys()
    stale = [str(k) for k in made if made[k] != have[k]]
    assert not stale, f"netdeviation/ differs from what nbdev_export makes of nbs/: {stale}; run nbdev_export"

def test_cli_help():
    exe = Path(sys.executable).with_name("netdeviation")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True).stdout
    assert "reproduce" in out and "baselines" in out
