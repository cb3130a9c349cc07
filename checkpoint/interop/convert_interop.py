"""Python's side of convert_test: the files PyTorch users have, and checks
of the files `ckpt convert` writes.

  python convert_interop.py write DIR
  python convert_interop.py check DIR OURS REFERENCE [--strip=PREFIX]

`write` makes, from one small model:
  model.pt            its state_dict (torch.save)
  model.safetensors   the same state_dict (safetensors.torch.save_file)
  ddp.pt              the state_dict of DistributedDataParallel: module.*
  train.pt            {'model', 'optimizer' (Adam), 'epoch', 'best_acc'}
  lightning.ckpt      a checkpoint shaped like PyTorch Lightning's: its
                      state_dict under model.*, optimizer_states, loops and
                      hyper_parameters pickled as a class of this script
                      (Lightning's AttributeDict is one), so a strict reader
                      must refuse it and a lenient one must read its tensors.
  pl.ckpt, pl_model.pt where PyPI's pytorch-lightning imports (the torch2
                      build): a real Lightning checkpoint from
                      Trainer.save_checkpoint after two Adam steps, and its
                      inner model's state_dict
`check` loads OURS (.pt with weights_only=True where this torch can, or
.safetensors) and REFERENCE (trusted, Python's own) and fails unless their
tensors are bitwise equal under the same names (REFERENCE's names with
PREFIX removed, when given).
"""
import os
import sys

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file


class AttributeDict(dict):
    """Stands for lightning.fabric.utilities.data.AttributeDict."""


def model():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(),
                        nn.Linear(4 * 26 * 26, 10))
    return net


def write(directory):
    net = model()
    state = net.state_dict()
    torch.save(state, os.path.join(directory, "model.pt"))
    save_file({k: v.contiguous() for k, v in state.items()},
              os.path.join(directory, "model.safetensors"))
    torch.save({"module." + k: v for k, v in state.items()},
               os.path.join(directory, "ddp.pt"))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(2):
        optimizer.zero_grad()
        net(torch.randn(2, 1, 28, 28)).sum().backward()
        optimizer.step()
    torch.save({"model": net.state_dict(), "optimizer": optimizer.state_dict(),
                "epoch": 3, "best_acc": 0.9125},
               os.path.join(directory, "train.pt"))
    torch.save(net.state_dict(), os.path.join(directory, "trained.pt"))
    torch.save({
        "epoch": 4, "global_step": 500,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": {"model." + k: v for k, v in net.state_dict().items()},
        "loops": {"fit_loop": {"epoch_progress": {"current": {"completed": 4}}}},
        "callbacks": {"ModelCheckpoint{'monitor': 'val_acc'}": {
            "best_model_score": torch.tensor(0.875)}},
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [],
        "hparams_name": "kwargs",
        "hyper_parameters": AttributeDict(lr=1e-3, layers=[4, 10]),
    }, os.path.join(directory, "lightning.ckpt"))


def write_lightning(directory):
    try:
        import pytorch_lightning as pl
    except ImportError:
        return  # Debian's torch 1.13 build: no Lightning
    from torch.utils.data import DataLoader, TensorDataset

    class Classifier(pl.LightningModule):
        def __init__(self, lr=1e-3, hidden=8):
            super().__init__()
            self.save_hyperparameters()
            self.model = nn.Sequential(nn.Linear(4, hidden), nn.ReLU(),
                                       nn.Linear(hidden, 2))

        def training_step(self, batch, _):
            x, y = batch
            return nn.functional.cross_entropy(self.model(x), y)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    torch.manual_seed(0)
    data = DataLoader(TensorDataset(torch.randn(16, 4),
                                    torch.randint(0, 2, (16,))), batch_size=8)
    module = Classifier()
    trainer = pl.Trainer(max_steps=2, accelerator="cpu", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(module, data)
    trainer.save_checkpoint(os.path.join(directory, "pl.ckpt"))
    torch.save(module.model.state_dict(),
               os.path.join(directory, "pl_model.pt"))


def load(path):
    if path.endswith(".safetensors"):
        return load_file(path), "safetensors load_file"
    try:
        return torch.load(path, weights_only=True), "weights_only"
    except Exception as e:  # 1.13's weights_only knows no BINFLOAT
        if "Unsupported operand 71" not in str(e):
            raise
        return torch.load(path), "full load (1.13's weights_only has no BINFLOAT)"


def flatten(value, path=""):
    out = {}
    if isinstance(value, torch.Tensor):
        out[path] = value
    elif isinstance(value, dict):
        for k, v in value.items():
            if not path and isinstance(v, dict) and k in ("state_dict", "model"):
                out.update(flatten(v, ""))
            else:
                out.update(flatten(v, (path + "/" if path else "") + str(k)))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            out.update(flatten(v, (path + "/" if path else "") + str(i)))
    return out


def same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(
        a.contiguous().view(-1).view(torch.uint8) if a.numel() else a,
        b.contiguous().view(-1).view(torch.uint8) if b.numel() else b)


def check(directory, ours, reference, strip):
    mine, how = load(os.path.join(directory, ours))
    theirs = flatten(torch.load(os.path.join(directory, reference)))
    theirs = {k[len(strip):] if strip and k.startswith(strip) else k: v
              for k, v in theirs.items()}
    mine = flatten(mine)
    assert sorted(mine) == sorted(theirs), (sorted(mine), sorted(theirs))
    for name, tensor in theirs.items():
        assert same_bits(mine[name], tensor), name
    print(ours, "bitwise-equal to", reference, "via", how)


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(sys.argv[2])
        write_lightning(sys.argv[2])
    else:
        strip = ""
        for arg in sys.argv[5:]:
            if arg.startswith("--strip="):
                strip = arg[len("--strip="):]
        check(sys.argv[2], sys.argv[3], sys.argv[4], strip)
