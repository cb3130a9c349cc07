"""One training epoch in Python PyTorch, the peer of `train` in
train_benchmark.sh: the same network as models/architectures.cc ("cnn" or
"mlp" with the default config), the same normalisation, batch size,
optimizer (SGD momentum 0.9, weight decay 5e-4, per-step cosine learning
rate) and thread count. Prints `python_epoch_seconds=S examples=N`.

Run with /usr/bin/python3 (the one with torch).
"""
import argparse
import gzip
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MEAN, STD = 0.2860, 0.3530


class Cnn(nn.Module):
    def __init__(self, conv1=16, conv2=32, hidden=128, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, conv1, 3, padding=1)
        self.conv2 = nn.Conv2d(conv1, conv2, 3, padding=1)
        self.fc1 = nn.Linear(conv2 * 7 * 7, hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x):
        x = F.max_pool2d(torch.relu(self.conv1(x)), [2, 2])
        x = F.max_pool2d(torch.relu(self.conv2(x)), [2, 2])
        x = torch.flatten(x, 1)
        return self.fc2(torch.relu(self.fc1(x)))


class Mlp(nn.Module):
    def __init__(self, hidden=128, classes=10):
        super().__init__()
        self.fc1 = nn.Linear(784, hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


def read_idx(path, header_bytes):
    with gzip.open(path, "rb") as f:
        return np.frombuffer(f.read()[header_bytes:], dtype=np.uint8)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--examples", type=int, default=55000)
    parser.add_argument("--lr", type=float, default=0.05)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)

    images = read_idx(args.data_dir + "/train-images-idx3-ubyte.gz", 16)
    labels = read_idx(args.data_dir + "/train-labels-idx1-ubyte.gz", 8)
    n = args.examples
    x = torch.from_numpy(images[: n * 784].copy()).float().view(n, 1, 28, 28)
    x = (x / 255.0 - MEAN) / STD
    y = torch.from_numpy(labels[:n].astype(np.int64))

    model = Cnn() if args.model == "cnn" else Mlp()
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9,
                                weight_decay=5e-4)
    batches = (n + args.batch_size - 1) // args.batch_size
    order = torch.randperm(n)
    start = time.perf_counter()
    for step in range(batches):
        for group in optimizer.param_groups:
            group["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * step / batches))
        index = order[step * args.batch_size:(step + 1) * args.batch_size]
        images_batch = x.index_select(0, index)
        labels_batch = y.index_select(0, index)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(images_batch), labels_batch)
        loss.backward()
        optimizer.step()
        loss.item()  # the C++ loop reads the loss every step too
    seconds = time.perf_counter() - start
    print(f"python_epoch_seconds={seconds:.3f} examples={n}")


if __name__ == "__main__":
    main()
