"""Gradient averaging across processes: ours against Python's
torch.distributed (Gloo), for the same tensors, in one run.

  python allreduce_benchmark.py OUR_BINARY [--world=2] [--steps=20]

The tensors are a ResNet-18's parameters (torchvision's layout: 62
tensors, 11.7 M floats, 44.6 MiB). Each side runs WORLD processes on
loopback and times the median step, after 3 warm-up steps, of averaging
every gradient over the ranks:
  ours:              ProcessGroup::AllReduceMean (flattened 25 MiB buckets)
  Python, per tensor: dist.all_reduce on each gradient, then divide
  Python, bucketed:   the same 25 MiB buckets flattened with
                      torch._utils._flatten_dense_tensors, one
                      dist.all_reduce each, as DDP does
Ratio = Python's time / ours (above 1: ours is faster).
"""
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "checkpoint", "interop"))
from pt_interop import ResNet18  # noqa: E402

BUCKET = 25 << 20


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def python_rank(rank, world, port, shapes, steps, mode, out):
    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:%d" % port,
                            rank=rank, world_size=world)
    grads = [torch.randn(s) for s in shapes]
    times = []
    for step in range(-3, steps):
        dist.barrier()
        start = time.perf_counter()
        if mode == "per_tensor":
            for g in grads:
                dist.all_reduce(g)
                g.div_(world)
        else:
            buckets, bucket, size = [], [], 0
            for g in grads:
                if bucket and size + g.numel() * 4 > BUCKET:
                    buckets.append(bucket)
                    bucket, size = [], 0
                bucket.append(g)
                size += g.numel() * 4
            buckets.append(bucket)
            for bucket in buckets:
                flat = torch._utils._flatten_dense_tensors(bucket)
                dist.all_reduce(flat)
                flat.div_(world)
                for g, f in zip(bucket, torch._utils._unflatten_dense_tensors(
                        flat, bucket)):
                    g.copy_(f)
        if step >= 0:
            times.append(time.perf_counter() - start)
    if rank == 0:
        with open(out, "w") as f:
            json.dump({"median_s": statistics.median(times)}, f)
    dist.destroy_process_group()


def run_python(world, shapes_file, steps, mode, work):
    port, out = free_port(), os.path.join(work, mode + ".json")
    procs = [subprocess.Popen([sys.executable, __file__, "--python-rank",
                               str(r), str(world), str(port), shapes_file,
                               str(steps), mode, out])
             for r in range(world)]
    for p in procs:
        if p.wait() != 0:
            sys.exit("python rank failed")
    with open(out) as f:
        return json.load(f)["median_s"]


def run_ours(binary, world, shapes_file, steps):
    port = free_port()
    procs = []
    for r in range(world):
        env = dict(os.environ, RANK=str(r), WORLD_SIZE=str(world),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        procs.append(subprocess.Popen(
            [binary, "--shapes=" + shapes_file, "--steps=%d" % steps],
            env=env, stdout=subprocess.PIPE, text=True))
    outputs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        sys.exit("our rank failed")
    return json.loads(outputs[0])["median_s"]


def main():
    if sys.argv[1] == "--python-rank":
        rank, world, port = map(int, sys.argv[2:5])
        with open(sys.argv[5]) as f:
            shapes = json.load(f)
        python_rank(rank, world, port, shapes, int(sys.argv[6]), sys.argv[7],
                    sys.argv[8])
        return
    binary = sys.argv[1]
    world, steps = 2, 20
    for arg in sys.argv[2:]:
        if arg.startswith("--world="):
            world = int(arg.split("=")[1])
        if arg.startswith("--steps="):
            steps = int(arg.split("=")[1])
    shapes = [list(p.shape) for p in ResNet18().parameters()]
    floats = sum(torch.Size(s).numel() for s in shapes)
    with tempfile.TemporaryDirectory() as work:
        shapes_file = os.path.join(work, "shapes.json")
        with open(shapes_file, "w") as f:
            json.dump(shapes, f)
        print("ResNet-18 gradients: %d tensors, %.1f MiB; %d processes; "
              "torch %s; %d steps" % (len(shapes), floats * 4 / 2**20, world,
                                      torch.__version__, steps))
        ours = run_ours(binary, world, shapes_file, steps)
        per_tensor = run_python(world, shapes_file, steps, "per_tensor", work)
        bucketed = run_python(world, shapes_file, steps, "bucketed", work)
    print("%-40s %10s %8s" % ("", "median s", "ratio"))
    print("%-40s %10.4f %8s" % ("ours: AllReduceMean (25 MiB buckets)",
                                ours, "1.00x"))
    print("%-40s %10.4f %7.2fx" % ("Python: all_reduce per tensor",
                                   per_tensor, per_tensor / ours))
    print("%-40s %10.4f %7.2fx" % ("Python: flattened 25 MiB buckets",
                                   bucketed, bucketed / ours))


if __name__ == "__main__":
    main()
