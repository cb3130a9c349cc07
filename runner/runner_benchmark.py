"""Compares, in one run, the steady-state latency and cold start of
  - our runner (`run --benchmark`, the Session library),
  - a bare C++ torch::jit::load + forward loop (bare_forward),
  - Python torch.jit.load + forward (python_forward.py, /usr/bin/python3),
on the same frozen CNN, the same thread count, batch sizes 1 and 64.

Each measurement is a fresh process; the three are interleaved round after
round so that load from other processes on the machine hits them alike,
and the median over rounds is reported. Called by runner_benchmark.sh.

  /usr/bin/python3 runner_benchmark.py RUN BARE_FORWARD MODEL [--threads=N]
      [--rounds=N] [--runs=N] [--warmup=N]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def commands(args, batch, warmup, runs):
    return {
        "runner": [args.run, f"--model={args.model}", "--benchmark", "--json",
                   f"--batch_size={batch}", f"--threads={args.threads}",
                   f"--warmup={warmup}", f"--runs={runs}"],
        "bare C++": [args.bare, f"--model={args.model}",
                     f"--batch_size={batch}", f"--threads={args.threads}",
                     f"--warmup={warmup}", f"--runs={runs}"],
        "Python": ["/usr/bin/python3", os.path.join(HERE, "python_forward.py"),
                   args.model, str(batch), str(args.threads), str(warmup),
                   str(runs)],
    }


def last_json(text):
    """The JSON document at the end of a program's output."""
    start = text.index("{")
    return json.loads(text[start:])


def steady_state(command):
    result = subprocess.run(command, capture_output=True, text=True,
                            check=True)
    return last_json(result.stdout)


def cold_start(command):
    """Seconds from spawning the process to its first line of output."""
    begin = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    process.stdout.readline()
    elapsed = time.perf_counter() - begin
    process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{command} failed")
    return elapsed * 1000


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("run")
    parser.add_argument("bare")
    parser.add_argument("model")
    parser.add_argument("input_npy", help="one item for the cold-start runs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()

    print(f"model: {args.model}; threads: {args.threads}; rounds: "
          f"{args.rounds}; warm-up {args.warmup} runs, then timed runs "
          f"(batch 1: {args.runs}, batch 64: {max(args.runs // 4, 20)})")
    names = ["runner", "bare C++", "Python"]
    results = {}
    for batch in (1, 64):
        runs = args.runs if batch == 1 else max(args.runs // 4, 20)
        per_round = {name: [] for name in names}
        for _ in range(args.rounds):
            for name, command in commands(args, batch, args.warmup,
                                          runs).items():
                per_round[name].append(steady_state(command)["latency_ms"])
        results[batch] = {
            name: {key: statistics.median(r[key] for r in rounds)
                   for key in ("p50", "avg", "p90", "p99")}
            | {"min": min(r["min"] for r in rounds)}
            for name, rounds in per_round.items()}

    print()
    print("Steady state latency (ms): min = fastest run over all rounds "
          "(least disturbed by other processes); p50, avg, p99 = median over "
          "rounds of each process's own statistic:")
    print(f"{'batch':>5} {'impl':<9} {'min':>9} {'p50':>9} {'avg':>9} "
          f"{'p99':>9} {'min/bare':>9} {'p50/bare':>9}")
    for batch, by_name in results.items():
        bare = by_name["bare C++"]
        for name in names:
            r = by_name[name]
            print(f"{batch:>5} {name:<9} {r['min']:>9.4f} {r['p50']:>9.4f} "
                  f"{r['avg']:>9.4f} {r['p99']:>9.4f} "
                  f"{r['min'] / bare['min']:>8.3f}x "
                  f"{r['p50'] / bare['p50']:>8.3f}x")
    print()
    for batch, by_name in results.items():
        runner, bare, python = (by_name[n] for n in names)
        print(f"batch {batch}: runner overhead over bare C++: "
              f"{(runner['min'] / bare['min'] - 1) * 100:+.1f}% (min), "
              f"{(runner['p50'] / bare['p50'] - 1) * 100:+.1f}% (p50); "
              f"Python / runner: {python['min'] / runner['min']:.2f}x (min), "
              f"{python['p50'] / runner['p50']:.2f}x (p50)")

    cold_commands = {
        "runner": [args.run, f"--model={args.model}",
                   f"--input={args.input_npy}", f"--threads={args.threads}"],
        "bare C++": [args.bare, f"--model={args.model}", "--batch_size=1",
                     f"--threads={args.threads}", "--warmup=0", "--runs=0"],
        "Python": ["/usr/bin/python3", os.path.join(HERE, "python_forward.py"),
                   args.model, "1", str(args.threads), "0", "0"],
    }
    cold = {name: [] for name in names}
    for _ in range(args.rounds):
        for name, command in cold_commands.items():
            cold[name].append(cold_start(command))
    print()
    print("Cold start, process start to first output line (ms, median over "
          "rounds; the runner's includes decoding the .npy and the top-k "
          "report):")
    bare_cold = statistics.median(cold["bare C++"])
    for name in names:
        value = statistics.median(cold[name])
        print(f"  {name:<9} {value:9.1f}   {value / bare_cold:6.2f}x bare")
    return 0


if __name__ == "__main__":
    sys.exit(main())
