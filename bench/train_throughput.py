"""Epoch time of `netdeviation.training.fit` vs the idiomatic torchvision pipeline and a bare tensor loop.

Prints one JSON object. Goals: fit >= 5x faster than the torchvision pipeline, and <= 1.15x the bare loop.
All three run in the same process on the same 55,000 training images, batch 128, Adam 1e-3, interleaved for
`--repeats` rounds; each arm reports its fastest epoch, so a burst of load from another process hits all arms alike.

    python bench/train_throughput.py [--repeats 2]
"""
import argparse, json, time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from torchvision import transforms
from torchvision.datasets import MNIST

from netdeviation.data import MNIST_MEAN, MNIST_STD, find_data_dir, load_mnist, split_indices
from netdeviation.models import get_model
from netdeviation.training import TrainConfig, fit, seed_everything

BS = 128
CFG = TrainConfig("adam", 1e-3, 1, BS, "constant")

def _timed(fn):
    t = time.perf_counter(); fn(); return time.perf_counter() - t

def epoch_fit(name, data):
    "One epoch of `fit` (it also evaluates the validation set once, as every epoch does)."
    seed_everything(0); m = get_model(name)
    return _timed(lambda: fit(m, data, CFG, eval_test=False, progress=False))

def epoch_torchvision(name, root):
    "One epoch through Dataset + ToTensor + Normalize + DataLoader (batch 128, shuffle, no workers)."
    seed_everything(0); m = get_model(name); opt = torch.optim.Adam(m.parameters(), 1e-3)
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))])
    ds = Subset(MNIST(str(root), train=True, transform=tf), split_indices()[0].tolist())
    def run():
        for xb, yb in DataLoader(ds, batch_size=BS, shuffle=True):
            loss = F.cross_entropy(m(xb), yb); opt.zero_grad(); loss.backward(); opt.step()
    return _timed(run)

def epoch_bare(name, data):
    "One epoch over pre-batched, pre-shuffled tensors: the floor for any in-memory loop."
    seed_everything(0); m = get_model(name); opt = torch.optim.Adam(m.parameters(), 1e-3)
    perm = torch.randperm(len(data.x_train))
    batches = list(zip(data.x_train[perm].split(BS), data.y_train[perm].split(BS)))
    def run():
        for xb, yb in batches:
            loss = F.cross_entropy(m(xb), yb); opt.zero_grad(); loss.backward(); opt.step()
    return _timed(run)

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=2, help="interleaved rounds; the fastest epoch of each arm counts")
    args = p.parse_args()
    torch.set_num_threads(2)
    data, (root, _) = load_mnist(), find_data_dir()
    out = {"threads": torch.get_num_threads(), "batch_size": BS, "n_train": len(data.x_train), "repeats": args.repeats}
    for name in ("lenet_300_100", "lenet5"):
        epoch_bare(name, data)  # warm-up
        rounds = [(epoch_fit(name, data), epoch_torchvision(name, root), epoch_bare(name, data)) for _ in range(args.repeats)]
        r = dict(zip(("fit_s", "torchvision_s", "bare_s"), map(min, zip(*rounds))))
        r["speedup_vs_torchvision"] = r["torchvision_s"]/r["fit_s"]
        r["ratio_to_bare"] = r["fit_s"]/r["bare_s"]
        r["goal_met"] = r["speedup_vs_torchvision"] >= 5 and r["ratio_to_bare"] <= 1.15
        out[name] = {k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}
    print(json.dumps(out, indent=1))

if __name__ == "__main__": main()
