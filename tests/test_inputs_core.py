"Bad input to the core API (data, models, training, deviation): one clear error naming the parameter, and checkpoints that heal."
import hashlib, io, json, os, warnings
from dataclasses import replace
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from torch import nn

from netdeviation.data import MNISTData, check_device, check_images, check_labels, load_mnist
from netdeviation.deviation import deviation, deviation_sweep, original_activations
from netdeviation.models import LayeredNet, get_model
from netdeviation.pruning import compute_masks
from netdeviation.training import (CONFIGS, TrainConfig, baseline_path, data_key, evaluate, fit, get_baseline, load_checkpoint,
                                   train_baseline)
from helpers import raises as _raises


@pytest.fixture(scope="module")
def tiny():
    "Random MNIST-shaped data: 64 training, 32 validation and 32 test images (no disk)."
    g = torch.Generator().manual_seed(0)
    x = lambda n: torch.randn(n, 1, 28, 28, generator=g)
    y = lambda n: torch.randint(10, (n,), generator=g)
    return MNISTData(x(64), y(64), x(32), y(32), x(32), y(32), Path("."))

@pytest.fixture(scope="module")
def small_net():
    "A random conv net on 6x6 images (fast deviations)."
    torch.manual_seed(0)
    return LayeredNet(OrderedDict(conv1=nn.Conv2d(1, 4, 3, padding=1), act1=nn.ReLU(), pool1=nn.MaxPool2d(2),
                                  flatten=nn.Flatten(), fc1=nn.Linear(36, 8), act2=nn.ReLU(), fc2=nn.Linear(8, 3)),
                      input_shape=(1, 6, 6), name="small")

@pytest.fixture(scope="module")
def x_small(): return torch.randn(16, 1, 6, 6, generator=torch.Generator().manual_seed(1))

# --- devices ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["gpu", "tpu", "cuda:x", ""])
def test_unknown_device_names_parameter_and_choices(bad):
    _raises(ValueError, lambda: check_device(bad), "device:", "'cpu', 'cuda' or 'cuda:N'")

def test_device_of_wrong_type():
    _raises(TypeError, lambda: check_device(0, name="--device"), "--device:", "'cpu'")

def test_cuda_requested_but_absent(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _raises(ValueError, lambda: check_device("cuda"), "device:", "CUDA is not available", "use 'cpu'")
    _raises(ValueError, lambda: check_device(torch.device("cuda", 0)), "device:", "CUDA is not available")

def test_cuda_index_beyond_the_machine(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    _raises(ValueError, lambda: check_device("cuda:3"), "device:", "'cuda:3'", "1 CUDA device(s)")

def test_load_mnist_checks_its_device_first():
    _raises(ValueError, lambda: load_mnist("/nonexistent", device="gpu"), "device:", "'cpu'")

def test_fit_evaluate_deviation_check_device(tiny, small_net, x_small):
    m = get_model("lenet_300_100")
    _raises(ValueError, lambda: fit(m, tiny, "paper", epochs=1, device="gpu", progress=False), "device:")
    _raises(ValueError, lambda: evaluate(m, tiny.x_val, tiny.y_val, device="npu"), "device:")
    _raises(ValueError, lambda: deviation(small_net, {}, x_small, device="gpu"), "device:")
    _raises(ValueError, lambda: deviation_sweep(small_net, x_small, device="metal", progress=False), "device:")

# --- images ----------------------------------------------------------------------------------------------------

def test_nan_and_inf_images_counted():
    x = torch.zeros(4, 1, 28, 28); x[0, 0, 0, 0] = float("nan"); x[1, 0, 0, :3] = float("inf")
    _raises(ValueError, lambda: check_images(x, name="images"), "images:", "4 of 3136 values are not finite")

def test_integer_images_point_to_normalise():
    _raises(ValueError, lambda: check_images(torch.zeros(2, 28, 28, dtype=torch.uint8)), "x:", "torch.uint8", "normalise")

def test_float64_images_become_float32():
    assert check_images(torch.zeros(2, 1, 28, 28, dtype=torch.float64)).dtype == torch.float32

def test_empty_and_non_tensor_images():
    _raises(ValueError, lambda: check_images(torch.zeros(0, 1, 28, 28)), "x:", "at least one image")
    _raises(TypeError, lambda: check_images([[0.0]]), "x:", "torch.Tensor")

def test_model_refuses_raw_pixels_and_casts_float64():
    net = get_model("lenet5")
    _raises(ValueError, lambda: net(torch.zeros(2, 1, 28, 28, dtype=torch.uint8)), "x:", "floating-point", "normalise")
    assert net(torch.zeros(2, 1, 28, 28, dtype=torch.float64)).dtype == torch.float32

def test_deviation_float64_images_match_float32(small_net, x_small):
    masks = compute_masks(small_net, "magnitude", 0.5)
    assert deviation(small_net, masks, x_small.double()).summary() == deviation(small_net, masks, x_small).summary()

def test_deviation_nan_images(small_net, x_small):
    bad = x_small.clone(); bad[0, 0, 0, 0] = float("nan")
    _raises(ValueError, lambda: deviation(small_net, {}, bad), "x:", "1 of 576 values are not finite")
    _raises(ValueError, lambda: original_activations(small_net, bad.long()), "x:", "torch.int64")
    _raises(ValueError, lambda: deviation_sweep(small_net, bad, progress=False), "x:", "not finite")

def test_fit_nan_training_images(tiny):
    x = tiny.x_train.clone(); x[5, 0, 3, 3] = float("inf")
    _raises(ValueError, lambda: fit(get_model("lenet_300_100"), replace(tiny, x_train=x), "paper", epochs=1, progress=False),
            "data.x_train:", "1 of 50176 values are not finite")

def test_fit_trains_on_float64_images(tiny):
    h = fit(get_model("lenet_300_100"), replace(tiny, x_train=tiny.x_train.double()), TrainConfig(epochs=1, batch_size=64),
            eval_test=False, progress=False)
    assert len(h) == 1 and h[-1]["step"] == 1

# --- labels ----------------------------------------------------------------------------------------------------

def test_labels_out_of_range_is_a_range_error_not_a_shape_error():
    msg = _raises(ValueError, lambda: check_labels(torch.tensor([0, 3, 11, -2]), n=4, n_classes=10, name="labels"),
                  "labels:", "[0, 10)", "[-2, 11]")
    assert "shape" not in msg

def test_labels_wrong_length_is_a_shape_error():
    _raises(ValueError, lambda: check_labels(torch.tensor([0, 1]), n=3), "y:", "shape (3,)", "(2,)")

def test_float_labels_refused():
    _raises(ValueError, lambda: check_labels(torch.tensor([0.0, 1.0])), "y:", "integer", ".long()")

def test_evaluate_labels_beyond_the_model_outputs(tiny):
    _raises(ValueError, lambda: evaluate(get_model("lenet_300_100"), tiny.x_val, tiny.y_val + 10), "y:", "[0, 10)")

def test_fit_validation_labels_out_of_range(tiny):
    _raises(ValueError, lambda: fit(get_model("lenet_300_100"), replace(tiny, y_val=tiny.y_val - 20), "paper", epochs=1,
                                    progress=False), "data.y_val:", "[0, 10)")

# --- numbers of fit / TrainConfig --------------------------------------------------------------------------------

@pytest.mark.parametrize("kw,exc,name", [
    (dict(epochs=-3), ValueError, "epochs:"), (dict(epochs=0), ValueError, "epochs:"), (dict(epochs=1.5), TypeError, "epochs:"),
    (dict(lr=0), ValueError, "lr:"), (dict(lr=float("inf")), ValueError, "lr:"), (dict(lr="1e-3"), TypeError, "lr:"),
    (dict(batch_size=0), ValueError, "batch_size:"), (dict(batch_size=True), TypeError, "batch_size:"),
    (dict(weight_decay=-1.0), ValueError, "weight_decay:"), (dict(momentum=1.5), ValueError, "momentum:"),
    (dict(optimizer="rmsprop"), ValueError, "optimizer:"), (dict(schedule="step"), ValueError, "schedule:")])
def test_train_config_numbers(kw, exc, name):
    _raises(exc, lambda: TrainConfig(**kw), name)

def test_fit_epochs_negative_is_not_silent(tiny):
    _raises(ValueError, lambda: fit(get_model("lenet_300_100"), tiny, "paper", epochs=-3, progress=False),
            "epochs:", "integer >= 1", "-3")

def test_fit_other_arguments(tiny):
    m = get_model("lenet_300_100")
    _raises(TypeError, lambda: fit(m, tiny, "paper", seed="0", progress=False), "seed:")
    _raises(TypeError, lambda: fit(m, (tiny.x_train, tiny.y_train), "paper", progress=False), "data:", "MNISTData")
    _raises(TypeError, lambda: fit(m, tiny, "paper", epochs=1, on_step=5, progress=False), "on_step:")
    _raises(ValueError, lambda: fit(m, tiny, "adamw", progress=False), "config:")
    _raises(ValueError, lambda: evaluate(m, tiny.x_val, tiny.y_val, batch_size=0), "batch_size:")

# --- deviation arguments -----------------------------------------------------------------------------------------

def test_deviation_sweep_empty_lists(small_net, x_small):
    for kw, name in ((dict(methods=[]), "methods:"), (dict(amounts=[]), "amounts:"), (dict(seeds=()), "seeds:")):
        _raises(ValueError, lambda: deviation_sweep(small_net, x_small, progress=False, **kw), name, "non-empty")

def test_deviation_activations_of_wrong_type(small_net, x_small):
    _raises(TypeError, lambda: deviation(small_net, {}, activations=[x_small]), "activations:", "original_activations")

# --- baselines and checkpoints -----------------------------------------------------------------------------------

def test_get_baseline_arguments(tmp_path):
    _raises(TypeError, lambda: get_baseline(seed="0"), "seed:")
    _raises(ValueError, lambda: get_baseline(act="tanh"), "act:")
    _raises(ValueError, lambda: get_baseline(model="vgg"), "model:")
    _raises(TypeError, lambda: get_baseline(config=CONFIGS["paper"]), "config:", "config name")
    (tmp_path/"file").write_text("")
    _raises(ValueError, lambda: get_baseline(config="paper", cache=tmp_path/"file"), "cache:", "is a file")

@pytest.fixture
def tiny_config(monkeypatch, tmp_path):
    "A one-step config registered as '_tiny', and a fresh, empty cache folder."
    monkeypatch.setitem(CONFIGS, "_tiny", TrainConfig("adam", 1e-3, 1, 64, "constant"))
    monkeypatch.setenv("NETDEVIATION_CACHE", str(tmp_path/"cache"))
    return "_tiny"

def _with_sidecar(path:Path, raw:bytes):
    "Write `raw` to `path` with a *matching* SHA-256 sidecar."
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw); path.with_suffix(".json").write_text(json.dumps({"sha256": hashlib.sha256(raw).hexdigest()}))

def _tensor_bytes(obj)->bytes:
    buf = io.BytesIO(); torch.save(obj, buf); return buf.getvalue()

@pytest.mark.parametrize("raw", [b"", b"not a pickle", _tensor_bytes(torch.zeros(3)), _tensor_bytes({"state": {"w": torch.zeros(1)}})],
                         ids=["empty", "garbage", "a tensor", "other weights"])
def test_unloadable_checkpoint_is_moved_aside_and_retrained(tiny, tiny_config, raw):
    path = baseline_path("lenet_300_100", tiny_config, 0, data=tiny)
    assert path.parent == Path(os.environ["NETDEVIATION_CACHE"])/"checkpoints"   # the temporary cache, not the shared one
    _with_sidecar(path, raw)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        b = get_baseline("lenet_300_100", tiny_config, data=tiny, progress=False)
    msgs = " ".join(str(x.message) for x in w)
    assert str(path) in msgs and "moved it aside" in msgs and "retraining" in msgs, msgs
    aside = list(path.parent.glob(f"{path.name}.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == raw                      # kept for inspection, not deleted
    assert b.path == path and load_checkpoint(path)["t_initial"] == 1.0          # retrained and cached
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                           # healed: loads without a warning
        again = get_baseline("lenet_300_100", tiny_config, data=tiny, progress=False)
    assert all(torch.equal(again.model.state_dict()[k], v) for k, v in b.model.state_dict().items())

def _same_weights(a, b): return all(torch.equal(a.model.state_dict()[k], v) for k, v in b.model.state_dict().items())

def test_a_baseline_trained_on_other_data_is_never_loaded_for_it(tiny, tiny_config):
    "The checkpoint name carries the data's key: each dataset gets the weights training on it gives (trained directly, uncached)."
    other = replace(tiny, x_train=tiny.x_train.flip(0), y_train=tiny.y_train.flip(0))   # same shapes and images, other order
    a = get_baseline("lenet_300_100", tiny_config, data=tiny, progress=False)
    b = get_baseline("lenet_300_100", tiny_config, data=other, progress=False)
    assert a.path != b.path and a.path.parent == b.path.parent
    assert _same_weights(b, train_baseline("lenet_300_100", tiny_config, data=other, progress=False))
    assert not _same_weights(a, b)
    copy_ = replace(tiny, **{s: getattr(tiny, s).clone() for s in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")})
    again = get_baseline("lenet_300_100", tiny_config, data=copy_, progress=False)      # equal tensors: the cached checkpoint
    assert again.path == a.path and _same_weights(again, a)

def test_data_key_follows_the_tensors(tiny):
    x = tiny.x_train.clone(); d = replace(tiny, x_train=x)
    k = data_key(d)
    assert k == data_key(tiny) != "" and len(k) == 8 and data_key(None) == ""
    x[0, 0, 0, 0] += 1                                                                  # changed in place: another dataset
    assert data_key(d) != k
    assert data_key(replace(tiny, y_train=tiny.y_train.roll(1))) != data_key(tiny)       # labels count too

def test_the_default_mnist_keeps_the_plain_name(tmp_path):
    try: mnist = load_mnist()
    except Exception as e: pytest.skip(f"MNIST is not available here: {e}")
    assert baseline_path("lenet5", "paper", 0, cache=tmp_path, data=mnist) == baseline_path("lenet5", "paper", 0, cache=tmp_path)
    assert baseline_path("lenet5", "paper", 0, cache=tmp_path).name.endswith("-seed0.pt")

def test_load_checkpoint_names_the_unloadable_file(tmp_path):
    from netdeviation.training import CheckpointError
    p = tmp_path/"x.pt"; _with_sidecar(p, b"")
    _raises(CheckpointError, lambda: load_checkpoint(p), f"checkpoint '{p}'", "cannot be loaded")
