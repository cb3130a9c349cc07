"""Python's side of user_model_test: a user's own architecture and weights.

  python user_model.py write DIR
  python user_model.py compare DIR OURS.npy

`write` makes, in DIR:
  resnet18_scripted.pt  torch.jit.script(ResNet18()).save(...): the
                        architecture only, with other (random) weights
  resnet18_ddp.pth      the weights: a trained-looking ResNet-18's
                        state_dict as DistributedDataParallel saves it
                        (module.*), BatchNorm statistics included
  resnet18.safetensors  the same weights, without the prefix
  labels.json           a model-info file (class labels, normalisation)
  input.npy             two float32 examples [2, 3, 112, 112]
  python_logits.npy     what Python's eval-mode model gives for them
`compare` fails unless OURS.npy equals python_logits.npy within 1e-5 and
prints the largest difference.
"""
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "checkpoint", "interop"))
from pt_interop import ResNet18  # noqa: E402  torchvision's layout

NUM_CLASSES = 10


def write(directory):
    torch.manual_seed(0)
    model = ResNet18(num_classes=NUM_CLASSES)
    model.train()
    with torch.no_grad():  # BatchNorm statistics that are not 0 and 1
        for _ in range(2):
            model(torch.randn(4, 3, 112, 112))
    model.eval()
    state = model.state_dict()
    torch.save({"module." + k: v for k, v in state.items()},
               os.path.join(directory, "resnet18_ddp.pth"))
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in state.items()},
              os.path.join(directory, "resnet18.safetensors"))
    torch.manual_seed(1)
    torch.jit.script(ResNet18(num_classes=NUM_CLASSES)).save(
        os.path.join(directory, "resnet18_scripted.pt"))
    with open(os.path.join(directory, "labels.json"), "w") as f:
        json.dump({"schema_version": 1,
                   "class_labels": ["class %d" % i for i in range(NUM_CLASSES)],
                   "normalization": {"mean": [0.485, 0.456, 0.406],
                                     "std": [0.229, 0.224, 0.225]}}, f)
    x = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(2))
    np.save(os.path.join(directory, "input.npy"), x.numpy())
    with torch.no_grad():
        np.save(os.path.join(directory, "python_logits.npy"), model(x).numpy())


def compare(directory, ours):
    theirs = np.load(os.path.join(directory, "python_logits.npy"))
    mine = np.load(ours)
    assert mine.shape == theirs.shape, (mine.shape, theirs.shape)
    difference = float(np.abs(mine - theirs).max())
    print("max abs difference from Python's logits:", difference)
    assert difference <= 1e-5, difference


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(sys.argv[2])
    else:
        compare(sys.argv[2], sys.argv[3])
