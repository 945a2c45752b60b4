"""The shipped model's learning curve: Kodak BD-rate vs Pillow's AVIF per checkpoint.

    python -m benchmarks.learning_curve --eval EVAL.json --checkpoint CKPT
    python -m benchmarks.learning_curve

With a measurement: takes the model's Kodak curve from EVAL.json (an
`hvae-compress eval --out` file), the step and training time from the
checkpoint it was measured on, the AVIF 4:4:4 and 4:2:0 curves from the
`kodak-avif.json` and `kodak-avif420.json` that an eval with those baselines
wrote beside its --out (folder --baselines), and adds or replaces that step's point in
models/weights/learning_curve.json. Either way it redraws
models/weights/learning_curve.png and prints the table for the model card.
Take the baselines from the same machine and library versions as the model's
curve (best, the same run), or the BD-rates compare apples with pears.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hvae_compress.evaluation import curves, plots

WEIGHTS = Path(__file__).resolve().parents[1] / "models" / "weights"
RECORD = WEIGHTS / "learning_curve.json"
FIGURE = WEIGHTS / "learning_curve.png"
BASELINES = {"AVIF 4:4:4": "kodak-avif.json", "AVIF 4:2:0": "kodak-avif420.json"}


def measured_point(eval_json: Path, checkpoint: Path, baselines: Path) -> dict:
    import torch

    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    ours = json.loads(eval_json.read_text())
    others = {
        name: curves.as_curve(json.loads((baselines / file).read_text()))
        for name, file in BASELINES.items()
    }
    bd_rates = curves.bd_rate_table(ours, others)
    return {
        "step": int(state["step"]),
        "cpu_hours": round(state["train_info"]["train_seconds"] / 3600, 2),
        "model": ours["description"],
        "bd_rate": {name: round(value, 2) for name, value in bd_rates.items()},
    }


def add(point: dict) -> list[dict]:
    points = json.loads(RECORD.read_text()) if RECORD.exists() else []
    points = [p for p in points if p["step"] != point["step"]] + [point]
    points.sort(key=lambda p: p["step"])
    RECORD.write_text(json.dumps(points, indent=2) + "\n")
    return points


def table(points: list[dict]) -> str:
    lines = [
        "| step | CPU-hours | "
        + " | ".join(f"BD-rate vs {n}" for n in BASELINES)
        + " |",
        "| ---: | ---: | " + " | ".join("---:" for _ in BASELINES) + " |",
    ]
    for p in points:
        rates = " | ".join(f"{p['bd_rate'][n]:+.1f} %" for n in BASELINES)
        lines.append(f"| {p['step']:,} | {p['cpu_hours']:.1f} | {rates} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--eval", type=Path, help="an `hvae-compress eval --out` file")
    parser.add_argument("--checkpoint", type=Path, help="the weights it measured")
    parser.add_argument(
        "--baselines",
        type=Path,
        default=Path("benchmarks/kodak"),
        help="folder with kodak-avif.json and kodak-avif420.json (default %(default)s)",
    )
    args = parser.parse_args(argv)
    if (args.eval is None) != (args.checkpoint is None):
        parser.error("--eval and --checkpoint go together")
    if args.eval:
        points = add(measured_point(args.eval, args.checkpoint, args.baselines))
    else:
        points = json.loads(RECORD.read_text())
    plots.plot_learning_curve(
        [p["cpu_hours"] for p in points],
        {n: [p["bd_rate"][n] for p in points] for n in BASELINES},
        [p["step"] for p in points],
        FIGURE,
    )
    print(table(points))


if __name__ == "__main__":
    main()
