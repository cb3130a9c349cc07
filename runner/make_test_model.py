"""Writes a small frozen TorchScript model with the exporter's metadata.

The runner's tests and benchmark use it instead of the exporter, so that
they depend on nothing but torch. Like `export`, the model is scripted,
frozen in eval mode and saved with the metadata document as the extra file
`metadata.json`.

  /usr/bin/python3 make_test_model.py --out=model.pt
      [--kind=small|cnn|resnet50|resnet18] [--no_metadata]
      [--metadata_json='{"input_shape": [2]}'] [--seed=0]

resnet50 and resnet18 are torchvision's (random weights, 3x224x224 input),
for GPU benchmarks; they need torchvision.
"""

import argparse
import json

import torch

LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
          "Shirt", "Sneaker", "Bag", "Ankle boot"]


class Small(torch.nn.Module):
    """A conv and a linear layer: fast, yet multi-threaded kernels."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.fc = torch.nn.Linear(4 * 26 * 26, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


class Cnn(torch.nn.Module):
    """The benchmark's CNN: conv 1->32, conv 32->64, linear 1600->128->10."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 32, 3)
        self.conv2 = torch.nn.Conv2d(32, 64, 3)
        self.fc1 = torch.nn.Linear(1600, 128)
        self.fc2 = torch.nn.Linear(128, 10)

    def forward(self, x):
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)  # 32x13x13
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)  # 64x5x5
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--kind", choices=["small", "cnn", "resnet50",
                                           "resnet18"], default="small")
    parser.add_argument("--no_metadata", action="store_true")
    parser.add_argument("--metadata_json", default="",
                        help="JSON object merged over the default metadata")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    item_shape = [1, 28, 28]
    if args.kind.startswith("resnet"):
        import torchvision  # Only these kinds need it.
        model = getattr(torchvision.models, args.kind)(num_classes=10)
        item_shape = [3, 224, 224]
    else:
        model = Small() if args.kind == "small" else Cnn()
    frozen = torch.jit.freeze(torch.jit.script(model.eval()))
    # A schema version 1 document (export/models/metadata.h), as `export` writes it.
    metadata = {
        "schema_version": 1,
        "source_checkpoint": {"path": "", "resolved_path": "",
                              "tensor_digest": "0" * 16,
                              "created_unix_micros": 0,
                              "producer": {"tool": "make_test_model.py",
                                           "version": ""},
                              "libtorch_version": torch.__version__},
        "epoch": 3,
        "global_step": 1407,
        "monitored": {"name": "val_acc", "mode": "max", "value": 0.875},
        "metrics": {"val_acc": 0.875},
        "class_labels": LABELS,
        "input_shape": item_shape,
        "input_dtype": "float32",
        "normalization": {"mean": [0.2860], "std": [0.3530]},
        "output": "logits",
        "architecture": {"name": args.kind, "config": {}},
        "producer": {"tool": "make_test_model.py", "version": "",
                     "libtorch_version": torch.__version__},
    }
    if args.metadata_json:
        metadata.update(json.loads(args.metadata_json))
    extra = {} if args.no_metadata else {
        "metadata.json": json.dumps(metadata)}
    torch.jit.save(frozen, args.out, _extra_files=extra)


if __name__ == "__main__":
    main()
