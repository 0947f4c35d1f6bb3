"""Untrusted files and unusual input (issue 22): no code runs from a CIFAR-10 batch, and every bad argument gets one
error that names the parameter (or the file), raised before any expensive work; nothing is silently accepted."""
import datetime, os, pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, RandomSampler, Subset, TensorDataset, WeightedRandomSampler

from netdeviation.data import DataError, from_dataset, from_tensors, load_cifar10, load_fashion_mnist, load_mnist
from netdeviation.deviation import deviation, deviation_sweep, graph_activations, original_activations, pruned_weights
from netdeviation.graph import UnsupportedOperation, check_model, trace
from netdeviation.pruning import compute_masks, get_masks, prune
from netdeviation.sweeps import expand_grid, load_grid
from helpers import raises as _raises




# ---------------------------------------------------------------- CIFAR-10 batches: a restricted unpickler

BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]

def _cifar(root:Path, n:int=3, protocol:int=pickle.DEFAULT_PROTOCOL, seed:int=0)->Path:
    "A genuine CIFAR-10-format folder: pickled dicts of uint8 rows and labels, as the official batches."
    rng, folder = np.random.default_rng(seed), root/"cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for f in BATCHES:
        batch = {"batch_label": f"{f} of 6", "labels": rng.integers(0, 10, n).tolist(),
                 "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "filenames": [f"{f}_{i}.png" for i in range(n)]}
        (folder/f).write_bytes(pickle.dumps(batch, protocol=protocol))
    return folder


class _System:
    "Unpickling runs `os.system(cmd)`."
    def __init__(self, cmd): self.cmd = cmd
    def __reduce__(self): return (os.system, (self.cmd,))

class _Eval:
    "Unpickling runs `eval(src)` through builtins."
    def __init__(self, src): self.src = src
    def __reduce__(self): return (eval, (self.src,))

class _Exec:
    def __init__(self, src): self.src = src
    def __reduce__(self): return (exec, (self.src,))

class _Open:
    "Unpickling opens (creates) a file: no command, still a side effect."
    def __init__(self, path): self.path = path
    def __reduce__(self): return (open, (self.path, "w"))

def _raw_global(marker:Path)->bytes:
    "A hand-written protocol-0 pickle: GLOBAL os.system, called on 'touch marker' (what crafted files look like)."
    return f"cos\nsystem\n(V touch {marker}\ntR.".encode()

PAYLOADS = {
    "os.system": lambda m: pickle.dumps({"data": _System(f"touch {m}"), "labels": [0]}),
    "eval": lambda m: pickle.dumps({"data": _Eval(f"open({str(m)!r}, 'w')"), "labels": [0]}),
    "exec": lambda m: pickle.dumps(_Exec(f"open({str(m)!r}, 'w').close()")),
    "open": lambda m: pickle.dumps({"data": np.zeros((1, 3072), np.uint8), "labels": [0], "x": _Open(str(m))}),
    "raw GLOBAL": _raw_global,
    "payload after genuine arrays": lambda m: pickle.dumps({"data": np.zeros((1, 3072), np.uint8), "labels": [0],
                                                            "z": _System(f"touch {m}")}),
}

@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_malicious_cifar_batch_never_runs(tmp_path, payload):
    folder = _cifar(tmp_path)
    marker = tmp_path/"payload_ran"
    (folder/"data_batch_3").write_bytes(PAYLOADS[payload](marker))
    msg = _raises(DataError, lambda: load_cifar10(tmp_path, n_val=2), str(folder/"data_batch_3"), "is not a genuine batch file")
    assert not marker.exists(), f"the payload ran: {msg}"
    assert "nothing in it was run" in msg


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_genuine_cifar_folder_still_loads(tmp_path, protocol):
    folder = _cifar(tmp_path, protocol=protocol, seed=protocol)
    d = load_cifar10(tmp_path, n_val=2, seed=protocol)
    batches = [pickle.loads((folder/f).read_bytes()) for f in BATCHES]        # the trusting reader, as a reference
    labels = sum((b["labels"] for b in batches[:5]), [])
    assert (len(d.y_train) + len(d.y_val), len(d.y_test)) == (15, 3) and d.input_shape == (3, 32, 32)
    assert sorted(torch.cat([d.y_train, d.y_val]).tolist()) == sorted(labels)
    assert d.y_test.tolist() == batches[5]["labels"]


def test_python2_style_batch_loads(tmp_path):
    "The official batches were written by Python 2 NumPy: `numpy.core.multiarray._reconstruct` under protocol 2."
    folder = _cifar(tmp_path, protocol=2, seed=7)
    for f in BATCHES:
        raw = (folder/f).read_bytes().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
        assert b"numpy.core.multiarray" in raw
        (folder/f).write_bytes(raw)
    assert len(load_cifar10(tmp_path, n_val=2, seed=7).y_test) == 3


# ---------------------------------------------------------------- from_dataset and load_mnist

@pytest.fixture(scope="module")
def numbered():
    x = torch.randint(0, 256, (40, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    x[:, 0, 0] = torch.arange(40, dtype=torch.uint8)
    return TensorDataset(x, torch.arange(40) % 4)


def test_a_shuffling_loader_gives_one_split(numbered):
    "Read in index order: two calls, and the unshuffled dataset itself, give the same validation split for one seed."
    runs = [from_dataset(DataLoader(numbered, batch_size=8, shuffle=True), n_val=5, seed=3) for _ in range(3)]
    plain = from_dataset(numbered, n_val=5, seed=3)
    for d in runs: assert torch.equal(d.x_val, plain.x_val) and torch.equal(d.y_val, plain.y_val)
    sub = from_dataset(DataLoader(numbered, batch_size=4, sampler=torch.utils.data.SubsetRandomSampler(range(0, 40, 2))), n_val=3)
    assert sub.y_train.numel() + sub.y_val.numel() + sub.y_test.numel() == 20


class _Liar(Dataset):
    "A dataset whose len() promises more items than it holds."
    def __init__(self, n:int=20, real:int=6): self.n, self.real = n, real
    def __len__(self): return self.n
    def __getitem__(self, i):
        if i >= self.real: raise IndexError(f"index {i} out of range")
        return torch.zeros(2, 3, 3), i % 2

class _BadLen(Dataset):
    def __init__(self, n): self.n = n
    def __len__(self): return self.n
    def __getitem__(self, i): return torch.zeros(2, 2), 0

GOOD = [(torch.zeros(2, 3, 3), i % 2) for i in range(8)]

@pytest.mark.parametrize("kw, exc, parts", [
    (dict(train=_Liar()), ValueError, ("train: len() says 20 items, but reading item 6 raised IndexError",)),
    (dict(train=GOOD, test=_Liar()), ValueError, ("test: len() says 20 items",)),
    (dict(train=GOOD, val=_Liar(12, 2)), ValueError, ("val: len() says 12 items, but reading item 2",)),
    (dict(train=DataLoader(_Liar(), batch_size=4)), ValueError, ("train: len() says 20 items, but reading batch 1",)),
    (dict(train=DataLoader(_Liar(), batch_size=4, shuffle=True)), ValueError, ("train: len() says 20 items",)),
    (dict(train=_BadLen(-1)), TypeError, ("train: len() of the dataset failed", "integer >= 0")),
    (dict(train=_BadLen("many")), TypeError, ("train: len() of the dataset failed",)),
    (dict(train=DataLoader(TensorDataset(torch.zeros(8, 2, 2), torch.zeros(8, dtype=torch.long)), batch_size=2,
                           sampler=WeightedRandomSampler([1.0]*8, 8))), ValueError, ("train: the DataLoader's sampler (WeightedRandomSampler) draws a different set",)),
    (dict(train=DataLoader(TensorDataset(torch.zeros(8, 2, 2), torch.zeros(8, dtype=torch.long)), batch_size=2,
                           sampler=RandomSampler(range(8), replacement=True))), ValueError, ("train: the DataLoader's sampler (RandomSampler)",)),
])
def test_from_dataset_bad_sources(kw, exc, parts):
    _raises(exc, lambda: from_dataset(**kw), *parts)


def _fake_mnist(monkeypatch, label:int, where:int=123):
    "torchvision's MNIST reader replaced by one that returns valid shapes and one label out of range."
    import torchvision.datasets as tvd
    class Fake:
        def __init__(self, root, train=True, download=False):
            n = 60_000 if train else 10_000
            self.data = torch.zeros(n, 28, 28, dtype=torch.uint8)
            self.targets = torch.arange(n) % 10
            if train: self.targets[where] = label
    monkeypatch.setattr(tvd, "MNIST", Fake); monkeypatch.setattr(tvd, "FashionMNIST", Fake)

@pytest.mark.parametrize("label, loader", [(200, load_mnist), (-1, load_mnist), (10, load_fashion_mnist)])
def test_mnist_labels_out_of_range_are_named(monkeypatch, tmp_path, label, loader):
    _fake_mnist(monkeypatch, label)
    msg = _raises(DataError, lambda: loader(tmp_path/f"fake{label}"), "train labels lie outside 0..9",
                  f"label {label} at index 123", "the shapes are right")
    assert "have shape" not in msg


# ---------------------------------------------------------------- models: dtype, device, what `pruned` is

def _net()->nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4*4*4, 3)).eval()

def _chain()->nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 8), nn.ReLU(), nn.Linear(8, 3)).eval()

X = torch.randn(6, 1, 6, 6, generator=torch.Generator().manual_seed(1))

def _mixed()->nn.Module:
    m = _net(); m[4].double(); return m

@pytest.mark.parametrize("make", [_net, _chain])
@pytest.mark.parametrize("call, exc, parts", [
    (lambda m: prune(m.half(), "magnitude", 0.5), TypeError, ("model: has torch.float16 weights", "model.float()")),
    (lambda m: prune(m.to(torch.bfloat16), "random", 0.5), TypeError, ("model: has torch.bfloat16 weights",)),
    (lambda m: compute_masks(m.half(), "clustered", 0.5, data=X), TypeError, ("model: has torch.float16 weights",)),
    (lambda m: deviation(m.half(), {}, X), TypeError, ("model: has torch.float16 weights",)),
    (lambda m: original_activations(m.half(), X), TypeError, ("model: has torch.float16 weights",)),
    (lambda m: deviation_sweep(m.half(), X, progress=False), TypeError, ("model: has torch.float16 weights",)),
    (lambda m: prune(m.to("meta"), "magnitude", 0.5), ValueError, ("model: ", "on the meta device", "to_empty")),
    (lambda m: deviation(m.to("meta"), {}, X), ValueError, ("model: ", "on the meta device",)),
    (lambda m: deviation(m, prune(m, "magnitude", 0.5).half(), X), TypeError, ("pruned: has torch.float16 weights",)),
    (lambda m: deviation(m, prune(m, "magnitude", 0.5).double(), X), TypeError, ("pruned: has torch.float64 weights and the model torch.float32",)),
    (lambda m: deviation(m, _net() if len(m) == 5 else _chain(), X), ValueError, ("pruned: holds no pruning masks", "prune(model, ...)")),
    (lambda m: deviation(m, m, X), ValueError, ("pruned: holds no pruning masks",)),
    (lambda m: deviation(m, nn.Sequential(nn.Flatten(), nn.Linear(36, 3)), X), ValueError, ("pruned: its architecture differs",)),
    (lambda m: deviation(m, "pruned.pt", X), TypeError, ("pruned: expected a pruned copy of the model", "got str")),
    (lambda m: pruned_weights(m, m), ValueError, ("pruned: holds no pruning masks",)),
    (lambda m: deviation(m, prune(m, "magnitude", 0.5).to("meta"), X), ValueError, ("pruned: ", "meta device")),
])
def test_model_dtype_device_and_pruned_are_checked(make, call, exc, parts):
    _raises(exc, lambda: call(make()), *parts)


def test_mixed_dtypes_and_non_modules():
    _raises(TypeError, lambda: prune(_mixed(), "magnitude", 0.5), "model: mixes torch.float32 and torch.float64 weights")
    _raises(TypeError, lambda: deviation(_mixed(), {}, X), "model: mixes torch.float32 and torch.float64")
    _raises(TypeError, lambda: graph_activations("net", X), "model: expected a torch nn.Module, got str")
    _raises(TypeError, lambda: check_model(None, "pruned"), "pruned: expected a torch nn.Module, got NoneType")


def test_the_refusals_come_before_the_work(monkeypatch):
    "A bad `pruned` is refused before the original network is run on the pruning data."
    import netdeviation.deviation as dev
    def boom(*a, **k): raise AssertionError("the original network was run before `pruned` was checked")
    monkeypatch.setattr(dev, "original_activations", boom)
    _raises(ValueError, lambda: deviation(_net(), _net(), X), "pruned: holds no pruning masks")
    _raises(TypeError, lambda: deviation(_net(), 3, X), "pruned: expected")


@pytest.mark.parametrize("make", [_net, _chain])
@pytest.mark.parametrize("method", ["magnitude", "clustered", "random_node"])
def test_float64_models_are_supported_alike(make, method):
    "prune and deviation take float64 models; the numbers match the float32 route's and an eager float64 forward."
    m64 = make().double()
    p64 = prune(m64, method, 0.5, data=X)
    assert p64[-1].weight.dtype == torch.float64
    d = deviation(m64, p64, X)
    with torch.no_grad(): eager = (p64(X.double()) - m64(X.double())).norm().item()
    assert d.lhs == pytest.approx(eager, rel=1e-9, abs=1e-12)
    assert deviation(m64, get_masks(p64), X).lhs == pytest.approx(d.lhs, rel=1e-12)


# ---------------------------------------------------------------- the graph: in-place changes it cannot follow

class _ViewThenInplace(nn.Module):
    "A view of h (a reshape, nn.Identity, a slice) made before an in-place ReLU changes h, and read after it."
    def __init__(self, how:str):
        super().__init__()
        self.fc, self.act, self.same, self.how = nn.Linear(4, 4), nn.ReLU(inplace=True), nn.Identity(), how
    def forward(self, x):
        h = self.fc(x)
        v = h.view(-1, 2, 2).flatten(1) if self.how == "view" else self.same(h) if self.how == "identity" else h[:, :]
        return self.act(h) + v

class _MethodOnView(nn.Module):
    def __init__(self): super().__init__(); self.fc = nn.Linear(4, 4)
    def forward(self, x):
        h = self.fc(x); v = h.view(-1, 4)
        v += 1            # changes h through the view
        return h + v

@pytest.mark.parametrize("model, node", [(_ViewThenInplace("view"), "act"), (_ViewThenInplace("identity"), "act"),
                                         (_ViewThenInplace("slice"), "act"), (_MethodOnView(), "iadd")])
def test_inplace_through_a_view_is_refused_naming_the_node(model, node):
    _raises(UnsupportedOperation, lambda: trace(model), f"model: the in-place operation at node '{node}'", "Use inplace=False")


# ---------------------------------------------------------------- sweep grids: values JSON cannot hold

@pytest.mark.parametrize("toml, where", [
    ('[grid]\nx = [1]\nday = [2024-01-02]\n', "grid['day']: datetime.date(2024, 1, 2) is a date"),
    ('[grid]\nx = [1]\n[fixed]\nat = 2024-01-02T10:00:00\n', "fixed['at']: datetime.datetime(2024, 1, 2, 10, 0) is a datetime"),
    ('[grid]\nx = [1]\n[fixed]\nwhen = 07:32:00\n', "fixed['when']: datetime.time(7, 32) is a time"),
    ('[[grid]]\nx = [1]\n[[grid]]\nx = [2]\nopts = [{d = 1979-05-27}]\n', "grid[1]['opts']: datetime.date(1979, 5, 27) is a date"),
])
def test_toml_dates_in_a_grid_are_named(tmp_path, toml, where):
    (g := tmp_path/"g.toml").write_text('notebook = "toy.ipynb"\n' + toml)
    (tmp_path/"toy.ipynb").write_text("{}")  # never opened: the values are checked first
    msg = _raises(TypeError, lambda: load_grid(g), where, "stored as JSON", "write it as a string")
    assert "not JSON serializable" not in msg


def test_python_date_in_a_grid():
    _raises(TypeError, lambda: expand_grid({"day": [datetime.date(2024, 1, 2)]}), "grid['day']: ")
    _raises(TypeError, lambda: expand_grid({"x": [1]}, {"seed": {1, 2}}), "fixed['seed']: {1, 2} is a set")
