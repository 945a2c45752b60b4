"""Training speed: steps/s and crops/s of the real `Trainer.step`, side by side.

    python -m benchmarks.train_speed       # writes benchmarks/train_speed.{json,md}

Each variant builds a `Trainer` on one training shard for the shipped preset
and times its real optimisation step (data, forward, rates, backward, Adam,
EMA) after warm-up steps, with the machine otherwise idle. "previous" is how
training ran before this benchmark (bf16 autocast, plain layout); the others
change one thing at a time; "current" is today's default.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from hvae_compress.models import TrainOptions
from hvae_compress.models.train import Trainer

from .run import TRAIN, machine, write_results

HERE = Path(__file__).resolve().parent

VARIANTS = {
    "previous: bf16 autocast, plain layout": dict(
        precision="bf16", channels_last=False
    ),
    "fp32, plain layout": dict(precision="fp32", channels_last=False),
    "current: auto precision, channels-last": dict(),
    "current + torch.compile": dict(compile=True),
    "current, 1 data-loader worker": dict(workers=1),
    "current, crops of 128 px, batch 32": dict(crop=128, batch_size=32),
    # The same global batch of 8 as two data-parallel processes of one thread.
    "current, 2 processes x 1 thread (DDP), batch 4 each": dict(
        batch_size=4, processes=2
    ),
    # Each process steps on its own; the weights are averaged every 100 steps.
    "current, 2 processes x 1 thread (local SGD), batch 8 each": dict(
        processes=2, average_every=100
    ),
}


def steps_per_second(variant: dict, warmup: int, steps: int) -> dict:
    options = dict(variant)
    processes = options.pop("processes", 1)
    if processes > 1:
        return _data_parallel(options, processes, warmup, steps)
    compile_model = options.pop("compile", False)
    with tempfile.TemporaryDirectory() as out:
        opts = TrainOptions(
            data=[str(TRAIN)], out=out, model="base", quiet=True, **options
        )
        trainer = Trainer(opts)
        if compile_model:
            trainer.wrapped = torch.compile(trainer.model)
        for step in range(warmup):
            trainer.step(step)
        start = time.perf_counter()
        for step in range(warmup, warmup + steps):
            trainer.step(step)
        seconds = (time.perf_counter() - start) / steps
        if trainer.local_steps():  # one average per average_every steps
            start = time.perf_counter()
            trainer.average_weights()
            seconds += (time.perf_counter() - start) / opts.average_every
    return _rates(
        trainer.precision, opts.batch_size * trainer.env.world_size, opts.crop, seconds
    )


def _rates(precision: str, batch: int, crop: int, seconds: float) -> dict:
    """One variant's row; ``batch`` counts the crops of all processes."""
    return {
        "precision": precision,
        "batch_size": batch,
        "crop": crop,
        "seconds_per_step": seconds,
        "steps_per_s": 1 / seconds,
        "crops_per_s": batch / seconds,
        "megapixels_per_s": batch * crop**2 / seconds / 1e6,
    }


def _data_parallel(options: dict, processes: int, warmup: int, steps: int) -> dict:
    """Time `Trainer.step` in ``processes`` torchrun workers of one thread each
    (gloo all-reduces the gradients); rank 0 prints its row."""
    command = [sys.executable, "-m", "torch.distributed.run"]
    command += ["--nproc_per_node", str(processes), "--master_port", "29541"]
    command += ["-m", "benchmarks.train_speed", "--worker", json.dumps(options)]
    command += ["--steps", str(steps), "--warmup", str(warmup)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        command, cwd=HERE.parent, env=env, capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def _kernels(m: dict) -> str:
    """The machine's kernels as recorded (older results did not record them)."""
    if "kernels" not in m:
        return "kernels not recorded"
    bf16 = "native bf16" if m["native_bf16"] else "bf16 emulated"
    return f"{m['kernels']} kernels, {bf16}"


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [
        "# Training speed",
        "",
        f"Written by `python -m benchmarks.train_speed` on {m['date']}: {m['cpu']}, "
        f"{m['cpus']} CPUs, {m['torch_threads']} torch threads, torch {m['torch']}, "
        f"{_kernels(m)}; "
        "the `base` preset, batch 8 of 256 px unless noted.",
        "",
        "| variant | precision | s/step | steps/s | crops/s | Mpx/s | vs previous |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    base = next(iter(results["variants"].values()))["megapixels_per_s"]
    for name, row in results["variants"].items():
        lines.append(
            f"| {name} | {row['precision']} | {row['seconds_per_step']:.2f} | "
            f"{row['steps_per_s']:.3f} | {row['crops_per_s']:.2f} | "
            f"{row['megapixels_per_s']:.3f} | {row['megapixels_per_s'] / base:.1f}x |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=6, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    parser.add_argument("--out", default=str(HERE / "train_speed.json"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # one DDP process
    args = parser.parse_args(argv)
    if args.worker:
        row = steps_per_second(json.loads(args.worker), args.warmup, args.steps)
        if os.environ.get("RANK", "0") == "0":
            print(json.dumps(row), flush=True)
        torch.distributed.destroy_process_group()
        return
    results = {"machine": machine(), "variants": {}}
    for name, variant in VARIANTS.items():
        slow = variant.get("precision") == "bf16"  # minutes per step where emulated
        steps = 2 if slow else args.steps
        warmup = 1 if slow else args.warmup
        results["variants"][name] = steps_per_second(variant, warmup, steps)
        print(f"  {name}: {results['variants'][name]}", flush=True)
    write_results(results, args.out, markdown)


if __name__ == "__main__":
    main()
