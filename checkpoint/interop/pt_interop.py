"""Python's side of pt_interop_test: torch.save files, real and hostile.

  python pt_interop.py write DIR
  python pt_interop.py check DIR NAME...   # DIR/ours-NAME.pt == DIR/NAME.pt

For each NAME.pt it writes, DIR/NAME.index.json lists the tensors as our
reader must name them (checkpoint/interop/pt_file.h) with their dtype,
shape and where their row-major bytes lie in DIR/NAME.bin. Hostile files
are DIR/hostile-*.pt; each would create DIR/pwned if unpickled by Python.
"""
import io
import json
import os
import pickle
import sys
import zipfile

import torch
import torch.nn as nn


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock, with its parameter names."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False),
                nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNet18(nn.Module):
    """torchvision.models.resnet18's layout (122 state_dict entries)."""

    def __init__(self, num_classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers = []
        cin = 64
        for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            layers.append(nn.Sequential(BasicBlock(cin, cout, stride),
                                        BasicBlock(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def raw(t):
    t = t.detach().contiguous().reshape(-1)
    if t.numel() == 0:
        return b""
    if t.dtype in (torch.complex64, torch.complex128):
        t = torch.view_as_real(t).reshape(-1)
    return t.view(torch.uint8).numpy().tobytes() if t.dtype != torch.bfloat16 \
        else t.view(torch.int16).numpy().tobytes()


def names(obj):
    """Our reader's names for obj's tensors (pt_file.h, NameContents)."""
    def is_state_dict(d):
        return isinstance(d, dict) and d and all(
            isinstance(k, str) and isinstance(v, torch.Tensor)
            for k, v in d.items())

    out = []

    def walk(value, path):
        join = (lambda p: p) if not path else (lambda p: path + "/" + p)
        if isinstance(value, torch.Tensor):
            out.append((path, value))
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(v, join(str(k)))
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(v, join(str(i)))

    if is_state_dict(obj):
        walk(obj, "")
        return out
    model = None
    if isinstance(obj, dict):
        for key in ["state_dict", "model_state_dict", "model", "model_state",
                    "net", "network"]:
            if key in obj and is_state_dict(obj[key]):
                model = key
                break
    if model is None:
        walk(obj, "")
        return out
    walk(obj[model], "")
    for k, v in obj.items():
        if k != model:
            walk(v, str(k))
    return out


def save(directory, name, obj, **kwargs):
    torch.save(obj, os.path.join(directory, name + ".pt"), **kwargs)
    index, blob = [], bytearray()
    for tensor_name, t in names(obj):
        data = raw(t)
        index.append({"name": tensor_name, "dtype": str(t.dtype)[6:],
                      "shape": list(t.shape), "offset": len(blob),
                      "size": len(data)})
        blob += data
    with open(os.path.join(directory, name + ".index.json"), "w") as f:
        json.dump(index, f)
    with open(os.path.join(directory, name + ".bin"), "wb") as f:
        f.write(blob)


def trained(optimizer_class, **kwargs):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    optimizer = optimizer_class(model.parameters(), **kwargs)
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.randn(5, 4)).sum().backward()
        optimizer.step()
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "epoch": 3, "best_acc": 0.9125}


class Pwn:
    """What an attacker pickles: unpickling it runs a shell command."""

    def __init__(self, function, argument):
        self.function, self.argument = function, argument

    def __reduce__(self):
        return (self.function, (self.argument,))


def hostile(directory, name, pickle_bytes):
    with zipfile.ZipFile(os.path.join(directory, name + ".pt"), "w") as z:
        z.writestr("archive/data.pkl", pickle_bytes)
        z.writestr("archive/version", "3\n")


def write(directory):
    torch.manual_seed(0)
    resnet = ResNet18()
    save(directory, "resnet18", resnet.state_dict())
    save(directory, "train_sgd",
         trained(torch.optim.SGD, lr=0.1, momentum=0.9))
    save(directory, "train_adam", trained(torch.optim.Adam, lr=1e-3))
    small = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    save(directory, "ddp",
         {"module." + k: v for k, v in small.state_dict().items()})
    save(directory, "protocol4", small.state_dict(), pickle_protocol=4)
    save(directory, "parameters",
         {"weight": nn.Parameter(torch.randn(2, 2)),
          "frozen": nn.Parameter(torch.randn(3), requires_grad=False)})
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    save(directory, "views",
         {"base": base, "row": base[1], "column": base[:, 2],
          "transposed": base.t(), "slice": base[1:3, 2:5],
          "strided": base[::2, ::3], "expanded": base[0, :3].expand(4, 3),
          "scalar": base[2, 2]})
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, generator=g)
    dtypes = {
        "float32": x, "float64": x.double(), "float16": x.half(),
        "bfloat16": x.bfloat16(), "int8": (x * 10).to(torch.int8),
        "uint8": (x * 10).abs().to(torch.uint8),
        "int16": (x * 1000).to(torch.int16),
        "int32": (x * 1e6).to(torch.int32),
        "int64": (x * 1e9).to(torch.int64), "bool": x > 0,
        "complex64": torch.complex(x, -x),
        "complex128": torch.complex(x.double(), x.double()),
        "empty": torch.zeros(0, 3), "zero_dim": torch.tensor(7),
    }
    if hasattr(torch, "uint16"):
        for t in ["uint16", "uint32", "uint64"]:
            dtypes[t] = (x * 100).abs().to(torch.int64).to(getattr(torch, t))
    if hasattr(torch, "float8_e4m3fn"):
        dtypes["float8_e4m3fn"] = x.to(torch.float8_e4m3fn)
        dtypes["float8_e5m2"] = x.to(torch.float8_e5m2)
    save(directory, "dtypes", dtypes)
    torch.save(small.state_dict(), os.path.join(directory, "legacy.pt"),
               _use_new_zipfile_serialization=False)

    marker = os.path.join(directory, "pwned")
    hostile(directory, "hostile-os-system",
            pickle.dumps(Pwn(os.system, "touch " + marker), protocol=2))
    hostile(directory, "hostile-eval",
            pickle.dumps(Pwn(eval, "open(%r, 'w')" % marker), protocol=2))
    import subprocess
    hostile(directory, "hostile-popen",
            pickle.dumps(Pwn(subprocess.Popen, ["touch", marker]),
                         protocol=2))
    # A real state_dict whose tensor claims more elements than its storage
    # record holds: rewrite the pickle's numel for the storage.
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(4)}, buffer)
    with zipfile.ZipFile(buffer) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    root = next(iter(entries)).split("/")[0]
    data = entries[root + "/data.pkl"]
    data = data.replace(b"K\x04t", b"K\x40t", 1)  # pid numel 4 -> 64
    entries[root + "/data.pkl"] = data
    with zipfile.ZipFile(os.path.join(directory, "hostile-storage.pt"),
                         "w") as z:
        for n, payload in entries.items():
            z.writestr(n, payload)


def same(a, b, path="root"):
    """Raises unless a and b hold equal structure and bitwise-equal tensors."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), path
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert a.requires_grad == b.requires_grad, path
        assert raw(a) == raw(b), path
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), path
        for k in a:
            same(a[k], b[k], "%s/%s" % (path, k))
    elif isinstance(a, (list, tuple)):
        assert type(a) == type(b) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, "%s/%d" % (path, i))
    else:
        assert type(a) == type(b) and a == b, (path, a, b)


def check(directory, names):
    for name in names:
        # Python's own file, trusted here; 2.11's weights_only cannot read
        # the protocol-4 one ("Unsupported operand 149": FRAME).
        theirs = torch.load(os.path.join(directory, name + ".pt"),
                            weights_only=False)
        path = os.path.join(directory, "ours-" + name + ".pt")
        try:
            ours, how = torch.load(path, weights_only=True), "weights_only"
        except Exception as e:  # 1.13's weights_only knows no BINFLOAT
            if "Unsupported operand 71" not in str(e):
                raise
            ours = torch.load(path, weights_only=False)
            how = "full load (1.13's weights_only has no BINFLOAT)"
        same(theirs, ours)
        print(name, "bitwise-equal via", how)


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(sys.argv[2])
    elif sys.argv[1] == "check":
        check(sys.argv[2], sys.argv[3:])
    print("torch", torch.__version__)
