"Any dataset as a `Data`: conversions, bring-your-own tensors and datasets, the three loaders, and bad input."
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Subset, TensorDataset

from netdeviation.data import (DATASETS, FASHION_MEAN, FASHION_STD, MNIST_MEAN, MNIST_STD, Data, DataError, MNISTData,
                               as_data, check_images, find_data_dir, from_dataset, from_tensors, load_cifar10,
                               load_dataset, load_fashion_mnist, load_mnist, normalise)
from netdeviation.data import _read_split as read_split
from helpers import raises as _raises

SPLITS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


def _same(a:Data, b:Data):
    for k in SPLITS: assert torch.equal(getattr(a, k), getattr(b, k)), k
    assert (a.mean, a.std) == (b.mean, b.std)

def _close(a:torch.Tensor, b:torch.Tensor, atol:float):
    assert a.shape == b.shape and float((a.double() - b.double()).abs().max()) <= atol

@pytest.fixture(scope="module")
def numbered():
    "60 one-channel uint8 images whose first pixel is their index (so every split can be traced back), labels 0..2."
    x = torch.randint(0, 256, (60, 5, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    x[:, 0, 0] = torch.arange(60, dtype=torch.uint8)
    return x, torch.arange(60) % 3

def _ids(d:Data, split:str)->set[int]:
    "The indices of a split's images, read back from their first pixel (undoing the standardisation)."
    x = getattr(d, f"x_{split}")[:, 0, 0, 0]
    raw = x if d.mean is None else x*d.std[0] + d.mean[0]
    return set(torch.round(raw*255).long().tolist())

# --- the container --------------------------------------------------------------------------------------------

def test_positional_construction_and_alias():
    "Existing code builds `MNISTData(x, y, xv, yv, xt, yt, root)`; it is `Data`, with the new fields defaulted."
    x, y = torch.randn(8, 1, 4, 4), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    d = MNISTData(x, y, x[:2], y[:2], x[:3], y[:3], Path("."))
    assert MNISTData is Data and isinstance(d, Data)
    assert (d.root, d.name, d.mean, d.std) == (Path("."), "data", None, None)
    assert d.input_shape == (1, 4, 4) and d.n_classes == 4 and d.pruning_data == (d.x_val, d.y_val)
    assert repr(d) == "Data('data', train=8, val=2, test=3, input (1, 4, 4), 4 classes, device=cpu)"
    m = replace(d, name="toy", mean=(0.5,), std=(0.2,)).to("cpu")
    assert (m.name, m.mean, m.std, m.root) == ("toy", (0.5,), (0.2,), Path("."))

def test_n_classes_counts_every_split():
    x = torch.randn(4, 1, 2, 2)
    d = Data(x, torch.tensor([0, 1, 0, 1]), x, torch.tensor([0, 0, 0, 0]), x, torch.tensor([0, 0, 6, 0]))
    assert d.n_classes == 7

# --- as_data --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def six():
    g = torch.Generator().manual_seed(1)
    return tuple(t for n in (20, 6, 6) for t in (torch.randn(n, 2, 3, 3, generator=g), torch.randint(3, (n,), generator=g)))

def test_as_data_round_trips(six):
    d = as_data(six)
    assert all(getattr(d, k) is v for k, v in zip(SPLITS, six))
    assert as_data(d) is d
    from_dict = as_data(dict(zip(SPLITS, six), name="toy", mean=(0.1, 0.2), std=(1.0, 2.0)))
    _same(replace(from_dict, mean=None, std=None), d)
    assert (from_dict.name, from_dict.mean) == ("toy", (0.1, 0.2))
    assert as_data(list(six)).x_test is six[4]
    half = as_data(replace(d, x_train=d.x_train.double()))
    assert half.x_train.dtype == torch.float32 and half.x_val is d.x_val

@pytest.mark.parametrize("bad, parts", [
    ((), ("data:", "expected a `Data`", "got a tuple of 0 items", "from_tensors(", "from_dataset(")),
    ("mnist", ("data:", "got str", "from_tensors")),
    (torch.zeros(3), ("data:", "got Tensor")),
])
def test_as_data_refuses_other_types(bad, parts):
    _raises(TypeError, lambda: as_data(bad), *parts)

def test_as_data_names_the_parameter_and_the_part(six):
    _raises(TypeError, lambda: as_data(None, name="pruning_data"), "pruning_data: expected")
    _raises(ValueError, lambda: as_data(dict(zip(SPLITS[:5], six))), "data: a dict of splits needs the keys", "missing ['y_test']")
    _raises(ValueError, lambda: as_data(dict(zip(SPLITS, six), extra=1)), "unknown ['extra']")
    raw = list(six); raw[0] = (raw[0].clamp(0, 1)*255).to(torch.uint8)
    _raises(ValueError, lambda: as_data(raw), "data[0] (x_train): expected floating-point images, got dtype torch.uint8", "from_tensors")
    nan = list(six); nan[2] = nan[2].clone(); nan[2][0, 0, 0, 0] = float("nan")
    _raises(ValueError, lambda: as_data(dict(zip(SPLITS, nan))), "data['x_val']: 1 of 108 values are not finite")
    short = list(six); short[3] = short[3][:2]
    _raises(ValueError, lambda: as_data(replace(as_data(six), y_val=short[3])),
            "data.y_val: expected labels of shape (6,)")
    _raises(ValueError, lambda: as_data(replace(as_data(six), x_test=six[4][:, :1])), "data.x_test: expected images of shape (N, 2, 3, 3)")
    _raises(ValueError, lambda: as_data(replace(as_data(six), y_train=six[1] - 5)), "data.y_train: labels must lie in [0, 3)")
    _raises(TypeError, lambda: as_data(replace(as_data(six), y_test=six[5].tolist())), "data.y_test:", "torch.Tensor")

def test_as_data_refuses_mixed_devices(six, monkeypatch):
    "Tensors on two devices (faked: the check reads `.device`) are one error naming `data`."
    d = as_data(six)
    class Elsewhere(torch.Tensor):
        @property
        def device(self): return torch.device("cuda", 0)
    moved = replace(d, x_test=d.x_test.as_subclass(Elsewhere))
    _raises(ValueError, lambda: as_data(moved), "data: the tensors are on different devices", ".to(device)")

# --- from_tensors ---------------------------------------------------------------------------------------------

def test_carved_splits_are_disjoint_and_seeded(numbered):
    x, y = numbered
    d = from_tensors(x, y, n_val=10)
    tr, va, te = _ids(d, "train"), _ids(d, "val"), _ids(d, "test")
    assert (len(tr), len(va), len(te)) == (40, 10, 10) and tr | va | te == set(range(60))
    assert not (tr & va or tr & te or va & te)
    again, other = from_tensors(x, y, n_val=10), from_tensors(x, y, n_val=10, seed=1)
    _same(again, d)
    assert _ids(other, "val") != va

def _ids_order(d:Data, split:str)->list[int]:
    x = getattr(d, f"x_{split}")[:, 0, 0, 0]*d.std[0] + d.mean[0]
    return torch.round(x*255).long().tolist()

def test_labels_follow_their_images(numbered):
    x, y = numbered
    d = from_tensors(x, y, n_val=0.25)
    for s in ("train", "val", "test"):
        assert getattr(d, f"y_{s}").tolist() == [i % 3 for i in _ids_order(d, s)]

def test_validation_never_comes_from_the_test_set(numbered):
    "With a test set given, the validation split is carved from the training images only, and the test set is untouched."
    x, y = numbered
    d = from_tensors(x[:40], y[:40], x[40:], y[40:], n_val=8)
    assert _ids(d, "test") == set(range(40, 60)) and _ids(d, "val") <= set(range(40))
    assert not _ids(d, "val") & _ids(d, "train")
    assert _ids_order(d, "test") == list(range(40, 60))
    carved = from_tensors(x[:40], y[:40], n_val=8)
    assert _ids_order(carved, "val") == _ids_order(d, "val")  # the same validation split with or without a test set

def test_statistics_of_the_training_part_only():
    "Per-channel mean and population std, computed in float64 NumPy on the training images only, applied to every split."
    rng = np.random.default_rng(3)
    pix = rng.integers(0, 256, (50, 6, 6, 3), dtype=np.uint8)
    pix[:, :, :, 2] //= 4  # channels with different statistics
    test = rng.integers(0, 256, (7, 6, 6, 3), dtype=np.uint8)
    d = from_tensors(pix, rng.integers(0, 4, 50), test, rng.integers(0, 4, 7), n_val=10)
    ref = np.transpose(pix, (0, 3, 1, 2)).astype(np.float64)/255
    train_ids = sorted(set(range(50)) - set(_match(ref, d, "val")))
    mean, std = ref[train_ids].mean(axis=(0, 2, 3)), ref[train_ids].std(axis=(0, 2, 3))
    np.testing.assert_allclose(d.mean, mean, atol=1e-6)
    np.testing.assert_allclose(d.std, std, atol=1e-6)
    assert abs(d.mean[2] - mean[:2].mean()) > 0.05  # really per channel
    want_test = (np.transpose(test, (0, 3, 1, 2))/255 - mean[None, :, None, None])/std[None, :, None, None]
    np.testing.assert_allclose(d.x_test.numpy(), want_test, atol=1e-5)
    np.testing.assert_allclose(d.x_train.numpy().mean(axis=(0, 2, 3)), 0, atol=1e-5)
    np.testing.assert_allclose(d.x_train.numpy().std(axis=(0, 2, 3)), 1, atol=1e-5)

def _match(ref:np.ndarray, d:Data, split:str)->list[int]:
    "Indices into `ref` of the images of a split (matched by their un-standardised pixels)."
    x = getattr(d, f"x_{split}").double().numpy()*np.array(d.std)[None, :, None, None] + np.array(d.mean)[None, :, None, None]
    return [int(np.abs(ref - xi[None]).reshape(len(ref), -1).max(axis=1).argmin()) for xi in x]

def test_layouts_and_dtypes():
    g = torch.Generator().manual_seed(2)
    nchw = torch.randint(0, 256, (30, 3, 4, 5), dtype=torch.uint8, generator=g)
    y = torch.arange(30) % 2
    a = from_tensors(nchw, y)
    b = from_tensors(nchw.permute(0, 2, 3, 1).numpy(), y.numpy())        # channel-last NumPy, as CIFAR-10 stores it
    c = from_tensors(nchw.float()/255, y.tolist())                       # floats in [0, 1], labels as a list
    d = from_tensors(nchw.double(), y)                                  # floats in [0, 255]: standardising removes the scale
    _same(a, b)
    for other in (c, d):
        for k in SPLITS: _close(getattr(other, k), getattr(a, k), 2e-5)
    assert b.x_train.is_contiguous() and a.x_train.dtype == torch.float32 and a.input_shape == (3, 4, 5)
    gray = from_tensors(nchw[:, 0], y)
    assert gray.input_shape == (1, 4, 5)

def test_normalise_options():
    g = torch.Generator().manual_seed(4)
    x, y = torch.randint(0, 256, (40, 28, 28), dtype=torch.uint8, generator=g), torch.arange(40) % 10
    given = from_tensors(x, y, x, y, x, y, normalise=(MNIST_MEAN, MNIST_STD))
    assert torch.equal(given.x_train, normalise(x)) and (given.mean, given.std) == ((MNIST_MEAN,), (MNIST_STD,))
    plain = from_tensors(x, y, x, y, x, y, normalise=False)
    assert torch.equal(plain.x_val, x.float().unsqueeze(1)/255) and plain.mean is None and plain.std is None
    rgb = torch.randint(0, 256, (40, 3, 4, 4), dtype=torch.uint8, generator=g)
    per = from_tensors(rgb, y, rgb, y, rgb, y, normalise=([0.1, 0.2, 0.3], 0.5))
    assert per.mean == (0.1, 0.2, 0.3) and per.std == (0.5, 0.5, 0.5)
    _close(per.x_test[:, 1], (rgb[:, 1].float()/255 - 0.2)/0.5, 1e-6)

def test_float_images_are_not_changed_in_place():
    x = torch.rand(20, 1, 3, 3); before = x.clone()
    from_tensors(x, torch.zeros(20, dtype=torch.long).index_fill_(0, torch.tensor([0]), 1))
    assert torch.equal(x, before)

@pytest.mark.parametrize("kw, exc, parts", [
    (dict(x_train=[[1]]), TypeError, ("x_train: expected images as a torch.Tensor or NumPy array, got list",)),
    (dict(y_train="abc"), TypeError, ("y_train: expected labels",)),
    (dict(y_train=torch.zeros(5, dtype=torch.long)), ValueError, ("y_train: expected labels of shape (20,)",)),
    (dict(y_train=torch.full((20,), -1), y_test=torch.tensor([0, 4]), x_test=torch.rand(2, 4, 4)), ValueError, ("y_train: labels must lie in [0, 5), got 20 outside that range (values [-1])",)),
    (dict(y_train=torch.zeros(20)), ValueError, ("y_train: expected integer class labels",)),
    (dict(x_train=torch.zeros(20, 4, 4, dtype=torch.int32)), ValueError, ("x_train: expected uint8 pixels or floating-point", "torch.int32")),
    (dict(x_train=torch.full((20, 4, 4), float("inf"))), ValueError, ("x_train: 320 of 320 values are not finite",)),
    (dict(x_train=torch.zeros(20, 2, 2, 2, 2)), ValueError, ("x_train: expected images of shape (N, H, W), (N, C, H, W) or (N, H, W, C)",)),
    (dict(x_test=torch.zeros(3, 4, 4)), ValueError, ("x_test, y_test: give both or neither (got only x_test)",)),
    (dict(y_val=torch.zeros(3, dtype=torch.long)), ValueError, ("x_val, y_val: give both or neither (got only y_val)",)),
    (dict(x_test=torch.zeros(3, 5, 4), y_test=torch.zeros(3, dtype=torch.long)), ValueError, ("x_test: expected images of shape (N, 1, 4, 4) like x_train",)),
    (dict(x_val=torch.zeros(3, 4, 4), y_val=torch.zeros(4, dtype=torch.long)), ValueError, ("y_val: expected labels of shape (3,)",)),
    (dict(n_val=10), ValueError, ("n_val: 10 validation and test images each leave no training images of the 20 given",)),
    (dict(n_val=20, x_test=torch.rand(2, 4, 4), y_test=torch.zeros(2, dtype=torch.long)), ValueError, ("n_val: 20 validation images leave no training images of the 20 given",)),
    (dict(n_val=0), ValueError, ("n_val: must be an integer >= 1, got 0",)),
    (dict(n_val=1.0), ValueError, ("n_val: must be > 0 and < 1, got 1.0",)),
    (dict(n_val="10"), TypeError, ("n_val: must be a number",)),
    (dict(n_val=True), TypeError, ("n_val: must be a number",)),
    (dict(seed=-0.5), TypeError, ("seed: must be an integer",)),
    (dict(normalise="standard"), TypeError, ("normalise: expected True (training-set statistics), False, or (mean, std)",)),
    (dict(normalise=(0.5,)), TypeError, ("normalise: expected",)),
    (dict(normalise=(0.5, -1)), ValueError, ("normalise: must be > 0, got -1",)),
    (dict(normalise=(float("nan"), 1)), ValueError, ("normalise: must be a finite number",)),
    (dict(x_train=torch.ones(20, 4, 4)), ValueError, ("x_train: channel(s) [0] are constant", "normalise=False")),
    (dict(name=""), ValueError, ("name: expected a non-empty string",)),
    (dict(device="gpu"), ValueError, ("device: expected 'cpu', 'cuda' or 'cuda:N'",)),
])
def test_from_tensors_bad_input(kw, exc, parts):
    args = dict(x_train=torch.rand(20, 4, 4), y_train=torch.arange(20) % 2) | kw
    _raises(exc, lambda: from_tensors(**args), *parts)

# --- from_dataset ---------------------------------------------------------------------------------------------

def test_from_dataset_matches_from_tensors(numbered):
    x, y = numbered
    want = from_tensors(x[:40], y[:40], x[40:], y[40:], n_val=5, name="n")
    train, test = TensorDataset(x[:40], y[:40]), TensorDataset(x[40:], y[40:])
    for a, b in [(train, test), (DataLoader(train, batch_size=7), DataLoader(test, batch_size=64)),
                 (list(zip(x[:40], y[:40].tolist())), test)]:
        got = from_dataset(a, b, n_val=5, name="n")
        _same(got, want)
        assert got.name == "n"
    val = from_dataset(train, test, val=TensorDataset(x[:3], y[:3]))
    assert _ids(val, "val") == {0, 1, 2} and len(val.y_train) == 40

def test_from_dataset_pil_images():
    from PIL import Image
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (12, 5, 6, 3), dtype=np.uint8)
    items = [(Image.fromarray(p), i % 2) for i, p in enumerate(rgb)]
    d = from_dataset(items, n_val=3)
    _same(d, from_tensors(rgb, np.arange(12) % 2, n_val=3))
    assert d.input_shape == (3, 5, 6)
    gray = from_dataset([(Image.fromarray(p[:, :, 0]), 0) for p in rgb] + [(Image.fromarray(rgb[0, :, :, 1]), 1)], n_val=2)
    assert gray.input_shape == (1, 5, 6)

def test_shuffled_loader_and_subset(numbered):
    x, y = numbered
    ds = TensorDataset(x, y)
    d = from_dataset(DataLoader(ds, batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(0)), n_val=6)
    assert _ids(d, "train") | _ids(d, "val") | _ids(d, "test") == set(range(60))
    for s in ("train", "val", "test"): assert getattr(d, f"y_{s}").tolist() == [i % 3 for i in _ids_order(d, s)]
    sub = from_dataset(Subset(ds, range(20)), n_val=2)
    assert _ids(sub, "train") | _ids(sub, "val") | _ids(sub, "test") == set(range(20))

def test_from_dataset_memory_limit_before_reading():
    "The estimate (images x values x 4 bytes) is checked after one item: a huge dataset is never read."
    class Huge(torch.utils.data.Dataset):
        reads = 0
        def __len__(self): return 1_000_000
        def __getitem__(self, i):
            Huge.reads += 1
            return torch.zeros(3, 224, 224, dtype=torch.uint8), 0
    msg = _raises(MemoryError, lambda: from_dataset(Huge()), "train: up to 1,000,000 images of shape (3, 224, 224)",
                  "about 560.8 GiB of float32 tensors", "max_bytes=4.0 GiB", "Subset")
    assert Huge.reads == 1, msg
    _raises(MemoryError, lambda: from_dataset(TensorDataset(torch.zeros(10, 4, 4), torch.zeros(10, dtype=torch.long)), max_bytes=600),
            "train: up to 10 images of shape (4, 4)", "640 bytes", "max_bytes=600 bytes")

@pytest.mark.parametrize("train, kw, exc, parts", [
    (torch.zeros(4, 2, 2), {}, TypeError, ("train: expected a torch Dataset or DataLoader, got a Tensor", "from_tensors")),
    (object(), {}, TypeError, ("train: expected a torch Dataset (with len()) or DataLoader",)),
    ([], {}, ValueError, ("train: the dataset is empty",)),
    ([(torch.zeros(2, 2), 0)] * 4, dict(test=[]), ValueError, ("test: the dataset is empty",)),
    ([(torch.zeros(2, 2), 0)] * 4, dict(val=[("img", 0)]), TypeError, ("val[0]: expected an image as a torch.Tensor, NumPy array or PIL image, got str",)),
    ([(torch.zeros(2, 2), 0, "extra")], {}, TypeError, ("train[0]: expected an (image, label) pair, got tuple of 3 items",)),
    ([(torch.zeros(2, 2), 0), (torch.zeros(2, 3), 1)], {}, ValueError, ("train: image 1 has shape (2, 3)", "Resize")),
    ([(torch.zeros(2, 2), 0), (torch.zeros(2, 2, dtype=torch.float64), 1)], {}, ValueError, ("train: image 1 has shape (2, 2) and dtype torch.float64",)),
    ([(torch.zeros(2, 2), 0.5)] * 4, {}, ValueError, ("train: the label of image 0 is not one integer",)),
    ([(torch.zeros(2, 2), 0)] * 4, dict(max_bytes="lots"), TypeError, ("max_bytes: must be a number",)),
    ([(torch.zeros(2, 2), 0)] * 4, dict(device="npu"), ValueError, ("device: expected",)),
    ([(torch.zeros(2, 2), 0)] * 4, dict(seed=None), TypeError, ("seed: must be an integer",)),
])
def test_from_dataset_bad_input(train, kw, exc, parts):
    _raises(exc, lambda: from_dataset(train, **kw), *parts)

def test_iterable_dataset_without_len():
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self): yield torch.zeros(2, 2), 0
    _raises(TypeError, lambda: from_dataset(DataLoader(Stream(), batch_size=2)), "train: a DataLoader over a dataset without len()", "from_tensors")

# --- validators stay exact ------------------------------------------------------------------------------------

def test_check_images_fast_path_is_exact():
    "A finite sum means no NaN/inf; an overflowing sum of finite values is still accepted, and NaN is still counted."
    big = torch.full((4, 1, 2, 2), 3e38)
    assert check_images(big) is big
    assert check_images(torch.full((2, 1, 300, 300), 60000.0, dtype=torch.float16)).dtype == torch.float32
    x = torch.zeros(3, 1, 2, 2); x[0, 0, 0, 0], x[1, 0, 1, 1] = float("nan"), float("-inf")
    _raises(ValueError, lambda: check_images(x), "x: 2 of 12 values are not finite")
    mixed = torch.tensor([float("inf"), -float("inf"), 1.0])
    _raises(ValueError, lambda: check_images(mixed), "x: 2 of 3 values are not finite")

def test_normalise_keeps_mnist_formula_and_checks():
    x = torch.randint(0, 256, (7, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    assert torch.equal(normalise(x), ((x.float()/255 - 0.1307)/0.3081).unsqueeze(1))
    assert normalise(x).shape == (7, 1, 28, 28)
    _raises(ValueError, lambda: normalise(x.float()), "x: expected uint8 pixels of shape (N, 28, 28)")
    _raises(ValueError, lambda: normalise(x, std=(0.3, 0.3)), "std: expected one number or one per channel (1), got 2")

# --- the loaders ----------------------------------------------------------------------------------------------

CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]

def _tiny_cifar(root:Path, n:int=6, seed:int=0)->dict:
    "Write a CIFAR-10-format folder (pickled dicts, as torchvision's CIFAR10 reads them) of `n` images per batch."
    rng, folder = np.random.default_rng(seed), root/"cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    for f in CIFAR_FILES:
        batches[f] = {"batch_label": f, "labels": rng.integers(0, 10, n).tolist(),
                      "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "filenames": [f"{i}.png" for i in range(n)]}
        (folder/f).write_bytes(pickle.dumps(batches[f]))
    (folder/"batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)], "num_cases_per_batch": n,
                                                      "num_vis": 3072}))
    return batches

def test_tiny_cifar_folder(tmp_path):
    batches = _tiny_cifar(tmp_path)
    d = load_dataset("cifar10", tmp_path, n_val=6)
    assert repr(d) == f"Data('cifar10', train=24, val=6, test=6, input (3, 32, 32), {d.n_classes} classes, device=cpu)"
    assert d.root == tmp_path.resolve() and d.name == "cifar10"
    train = np.concatenate([batches[f]["data"] for f in CIFAR_FILES[:5]]).reshape(-1, 3, 32, 32).astype(np.float64)/255
    labels = np.concatenate([batches[f]["labels"] for f in CIFAR_FILES[:5]])
    perm = torch.randperm(30, generator=torch.Generator().manual_seed(0)).numpy()  # independent of split_indices
    tr, va = perm[:24], perm[24:]
    np.testing.assert_allclose(d.mean, train[tr].mean(axis=(0, 2, 3)), atol=1e-6)
    np.testing.assert_allclose(d.std, train[tr].std(axis=(0, 2, 3)), atol=1e-6)
    assert d.y_val.tolist() == labels[va].tolist() and d.y_test.tolist() == batches["test_batch"]["labels"]
    test = batches["test_batch"]["data"].reshape(-1, 3, 32, 32)/255
    want = (test - np.array(d.mean)[None, :, None, None])/np.array(d.std)[None, :, None, None]
    np.testing.assert_allclose(d.x_test.numpy(), want, atol=1e-5)
    _same(load_cifar10(tmp_path, n_val=6), d)

def test_cifar_errors_and_no_download_into_a_named_folder(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tvu
    def no_download(*a, **k): raise AssertionError("download attempted")
    monkeypatch.setattr(tvu, "download_and_extract_archive", no_download)
    _raises(DataError, lambda: load_cifar10(tmp_path/"none"), "CIFAR-10 not found or unreadable in", str(tmp_path/"none"),
            "cifar-10-batches-py", "NETDEVIATION_DATA")
    _tiny_cifar(tmp_path)
    (tmp_path/"cifar-10-batches-py"/"data_batch_3").write_bytes(b"not a pickle")
    _raises(DataError, lambda: load_cifar10(tmp_path), "CIFAR-10 not found or unreadable", "data_batch_3")
    (tmp_path/"cifar-10-batches-py"/"data_batch_3").write_bytes(pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0, 11]}))
    _raises(DataError, lambda: load_cifar10(tmp_path), "CIFAR-10 in", "is corrupt: 'data_batch_3'", "labels in 0..9")
    _raises(ValueError, lambda: load_cifar10(tmp_path, n_val=0), "n_val: must be an integer >= 1")

def test_cifar_downloads_only_into_the_cache(tmp_path, monkeypatch):
    "With neither `data_dir` nor NETDEVIATION_DATA, the archive is fetched into the cache folder (here: faked)."
    import torchvision.datasets.utils as tvu
    calls = []
    def fake(url, root, filename=None, md5=None):
        calls.append((url, Path(root), filename, md5)); _tiny_cifar(Path(root))
    monkeypatch.setattr(tvu, "download_and_extract_archive", fake)
    monkeypatch.delenv("NETDEVIATION_DATA", raising=False)
    monkeypatch.setenv("NETDEVIATION_CACHE", str(tmp_path))
    d = load_dataset("cifar10", n_val=3)
    assert calls and calls[0][1] == tmp_path/"data" and calls[0][2] == "cifar-10-python.tar.gz"
    assert len(d.y_train) == 27 and d.root == (tmp_path/"data").resolve()

def test_load_dataset_names():
    assert DATASETS == ("mnist", "fashion_mnist", "cifar10")
    _raises(ValueError, lambda: load_dataset("cifar100"), "name: expected one of ['mnist', 'fashion_mnist', 'cifar10'], got 'cifar100'")
    _raises(ValueError, lambda: load_dataset("MNIST"), "name: expected one of")

def test_missing_fashion_names_dataset_and_folder(tmp_path):
    msg = _raises(DataError, lambda: load_fashion_mnist(tmp_path), "Fashion-MNIST not found or unreadable in",
                  f"'{tmp_path.resolve()}/FashionMNIST/raw'", "NETDEVIATION_DATA")
    assert "Pass `data_dir=` (the folder that holds FashionMNIST/raw)" in msg

def _data_root(folder:str)->Path:
    root, _ = find_data_dir()
    if not (root/folder/"raw"/"train-images-idx3-ubyte").exists(): pytest.skip(f"{folder} not in the data folder (set NETDEVIATION_DATA)")
    return root

def _independent(root:Path, cls, mean:float, std:float, seed:int=0)->dict:
    "Today's tensors, recomputed: torchvision reads the IDX files, then the formula and the permutation by hand."
    from torchvision import datasets
    tr, te = getattr(datasets, cls)(str(root), train=True), getattr(datasets, cls)(str(root), train=False)
    x = ((tr.data.float()/255 - mean)/std).unsqueeze(1)
    perm = torch.randperm(60_000, generator=torch.Generator().manual_seed(seed))
    return dict(x_train=x[perm[:55_000]], y_train=tr.targets[perm[:55_000]], x_val=x[perm[55_000:]], y_val=tr.targets[perm[55_000:]],
                x_test=((te.data.float()/255 - mean)/std).unsqueeze(1), y_test=te.targets)

def test_load_mnist_is_unchanged():
    root = _data_root("MNIST")
    d, want = load_mnist(), _independent(root, "MNIST", 0.1307, 0.3081)
    for k in SPLITS: assert torch.equal(getattr(d, k), want[k]), k
    assert (d.name, d.mean, d.std, d.n_classes, d.input_shape) == ("mnist", (MNIST_MEAN,), (MNIST_STD,), 10, (1, 28, 28))
    assert load_dataset("mnist").x_val is d.x_val  # one cached copy
    assert isinstance(d, MNISTData) and as_data(d) is d
    _raises(ValueError, lambda: load_mnist(n_val=60_000), "n_val: must be smaller than the 60000 training images")

def test_fashion_mnist():
    root = _data_root("FashionMNIST")
    d = load_dataset("fashion_mnist")
    want = _independent(root, "FashionMNIST", FASHION_MEAN, FASHION_STD)
    for k in SPLITS: assert torch.equal(getattr(d, k), want[k]), k
    assert repr(d) == "Data('fashion_mnist', train=55000, val=5000, test=10000, input (1, 28, 28), 10 classes, device=cpu)"
    assert (d.mean, d.std) == ((0.2860,), (0.3530,))
    raw = torch.cat([d.x_train, d.x_val]).double()*FASHION_STD + FASHION_MEAN  # the 60,000 training images, pixel/255
    assert abs(raw.mean().item() - FASHION_MEAN) < 5e-5 and abs(raw.std().item() - FASHION_STD) < 5e-5

def test_mnist_loads_without_torchvision():
    "The IDX files are read directly: loading MNIST from its folder imports no torchvision (seconds in every kernel)."
    import subprocess, sys
    _data_root("MNIST")
    code = "import sys; from netdeviation.data import load_mnist; load_mnist(); print('torchvision' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out

def test_corrupt_idx_file_is_a_data_error(tmp_path):
    "A truncated or mislabelled IDX file is one `DataError` naming the dataset, the folder and the file."
    raw = tmp_path/"MNIST"/"raw"
    raw.mkdir(parents=True)
    header = lambda *dims: bytes([0, 0, 8, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims)
    (raw/"train-labels-idx1-ubyte").write_bytes(header(60_000) + bytes(60_000))
    (raw/"train-images-idx3-ubyte").write_bytes(header(60_000, 28, 28) + bytes(100))   # truncated
    _raises(DataError, lambda: read_split(tmp_path, True, False), "MNIST not found or unreadable in", str(tmp_path),
            "train-images-idx3-ubyte holds 100 bytes of data; its header says (60000, 28, 28)")
    (raw/"train-images-idx3-ubyte").write_bytes(b"\x00\x00\x0d\x03" + bytes(12))          # floats, not bytes
    _raises(DataError, lambda: read_split(tmp_path, True, False), "train-images-idx3-ubyte is not an IDX file of unsigned bytes")
    (raw/"train-images-idx3-ubyte").write_bytes(header(60_000, 28, 28) + bytes(60_000*784))
    x, y = read_split(tmp_path, True, False)
    assert (x.shape, x.dtype, y.shape, y.dtype) == ((60_000, 28, 28), torch.uint8, (60_000,), torch.int64)
