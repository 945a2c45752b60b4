"""Large photos: seams, memory and speed on a 12-megapixel image, side by side.

    python -m benchmarks.large [--old REF] [--before REF] [--model NAME] [--huge]
    # writes benchmarks/large.{json,md}

The image: four Kodak photos side by side (2 x 2), upscaled to 4000x2667, so
that it is smooth at pixel level like a phone photo. In one run, on this
machine, each case in a fresh process (time of the coding call, peak resident
memory of the process):

- ours at quality 50 with the default tile size and precision ("auto":
  bfloat16 encoding where the CPU has it natively), in float32 and in
  bfloat16 both ways, and processed whole;
- with ``--old REF``, the codec of a commit from before the package layout (a
  git worktree of it, with its own shipped weights), e.g. the last release that
  coded large images in independent tiles;
- with ``--before REF``, the package as of an earlier commit, installed on its
  own (its weights, its defaults), to compare speed and memory with;
- Pillow's WebP and AVIF, and CompressAI's mbt2018-mean (random weights);
- with ``--model NAME_OR_PATH``, ours with another shipped model (``fast``)
  or other weights (for example a narrower model made by ``train --widths``)
  at the default tile size, in the default precision and in bfloat16, named
  by the file's stem;
- with ``--huge``, the same mosaic at 8660x5773 (50 megapixels): ours and
  the ``--before`` version.

It also measures the seams: `evaluation.metrics.edge_error_ratio` at every
multiple of 64 pixels (the worst edge's gradient error over its neighbours'),
and bpp and PSNR against processing the image whole.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
KODAK = REPO.parent / "shared" / "datasets" / "kodak"
SIZE = (4000, 2667)
HUGE_SIZE = (8660, 5773)  # 50 megapixels, the same mosaic upscaled further
MOSAIC = ("kodim01", "kodim05", "kodim13", "kodim23")

# Runs in a fresh process: time one coding call and report the peak memory.
CASE = """
import io, json, sys, time
from PIL import Image
kind, operation, source, target, option = sys.argv[1:6]
import torch
torch.set_num_threads(int(sys.argv[6]))

def peak_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

if kind == "ours":
    from hvae_compress import codec
    model, tile, precision = json.loads(option)
    coder = codec.Codec(model, "cpu", tile_size=tile, precision=precision)
    run = {
        "encode": lambda: coder.encode(source, quality=50),
        "decode": lambda: coder.decode(open(source, "rb").read()),
    }[operation]
elif kind == "installed":  # an earlier version of this package
    sys.path.insert(0, option)
    from hvae_compress import codec
    coder = codec.Codec(None, "cpu")
    run = {
        "encode": lambda: coder.encode(source, quality=50),
        "decode": lambda: coder.decode(open(source, "rb").read()),
    }[operation]
elif kind == "old":
    sys.path.insert(0, option)
    import codec
    coder = codec.Codec(option + "/models/weights/base.pt", "cpu")
    run = {
        "encode": lambda: coder.encode(source, quality=50),
        "decode": lambda: coder.decode(open(source, "rb").read()),
    }[operation]
elif kind == "pillow":
    image = Image.open(source)
    image.load()

    def run():
        if operation == "decode":
            with Image.open(io.BytesIO(open(source, "rb").read())) as decoded:
                decoded.load()
                return decoded
        buffer = io.BytesIO()
        image.save(buffer, format=option, quality=75)
        return buffer.getvalue()
else:  # compressai
    sys.path.insert(0, option)
    from benchmarks.run import compressai_model
    encode, decode = compressai_model("mbt2018_mean")
    image = Image.open(source).convert("RGB")
    data = encode(image)
    run = {"encode": lambda: encode(image), "decode": lambda: decode(data)}[operation]
start = time.perf_counter()
result = run()
seconds = time.perf_counter() - start
if target != "-":
    if isinstance(result, bytes):
        open(target, "wb").write(result)
    else:
        result.save(target)
print(json.dumps({"seconds": seconds, "peak_mb": peak_mb()}))
"""


def mosaic() -> Image.Image:
    """Four Kodak images, 2 x 2, upscaled (bicubic) to 4000x2667."""
    tiles = [Image.open(KODAK / f"{name}.png").convert("RGB") for name in MOSAIC]
    tiles = [t if t.width >= t.height else t.rotate(90, expand=True) for t in tiles]
    canvas = Image.new("RGB", (768 * 2, 512 * 2))
    for i, tile in enumerate(tiles):
        canvas.paste(tile, ((i % 2) * 768, (i // 2) * 512))
    return canvas.resize(SIZE, Image.Resampling.BICUBIC)


def run_case(kind, operation, source, target, option, threads) -> dict:
    command = [sys.executable, "-c", CASE, kind, operation, str(source)]
    command += [str(target), str(option), str(threads)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if result.returncode:
        raise RuntimeError(f"{kind} {operation}: {result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def worktree(ref: str, folder: Path) -> Path:
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(folder), ref],
        check=True,
        capture_output=True,
    )
    return folder


def installed(ref: str, folder: Path) -> Path:
    """The package as of commit ``ref``, installed (without dependencies) into
    a folder of its own: the folder to put on sys.path."""
    source = worktree(ref, folder / "source")
    target = folder / "package"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps"]
        + ["--target", str(target), str(source)],
        check=True,
        capture_output=True,
    )
    remove_worktree(source)
    return target


def remove_worktree(folder: Path) -> None:
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "remove", "--force", str(folder)],
        check=True,
    )


def summary(runs: list[dict]) -> dict:
    """The fastest time and the highest peak memory of one case's runs.

    The fastest: on a shared machine other work only ever adds time (one
    afternoon, runs of one case spread by up to 1.8x), so the minimum is the
    best estimate of the code's own cost.
    """
    return {
        "seconds": min(run["seconds"] for run in runs),
        "peak_mb": max(run["peak_mb"] for run in runs),
        "runs": len(runs),
    }


def run_rounds(cases: dict, source, folder, tag, threads, repeats) -> tuple:
    """Encode ``source`` and decode the result with each case in fresh
    processes, ``repeats`` rounds in which the cases take turns, so that a slow
    stretch of a shared machine falls on all of them alike (one case's runs
    back to back measured the first case up to 1.5x slower than the same code
    later on). Per case: the fastest time and the highest peak of each
    direction, and the coded and decoded files ("-" where none is written)."""
    runs = {name: {"encode": [], "decode": []} for name in cases}
    files = {}
    for number, (name, (kind, option)) in enumerate(cases.items()):
        suffix = {"pillow": f".{str(option).lower()}", "compressai": None}.get(
            kind, ".hvae"
        )
        coded = folder / f"case{tag}{number}{suffix}" if suffix else "-"
        decoded = folder / f"case{tag}{number}.png" if suffix else "-"
        files[name] = (coded, decoded)
    for _ in range(repeats):
        for name, (kind, option) in cases.items():
            coded, decoded = files[name]
            decode_from = coded if coded != "-" else source
            for operation, case_source, target in (
                ("encode", source, coded),
                ("decode", decode_from, decoded),
            ):
                run = run_case(kind, operation, case_source, target, option, threads)
                runs[name][operation].append(run)
    results = {}
    for name, operations in runs.items():
        results[name] = {op: summary(done) for op, done in operations.items()}
        print(
            f"  {name}: encode {results[name]['encode']['seconds']:.2f} s, "
            f"decode {results[name]['decode']['seconds']:.2f} s",
            flush=True,
        )
    return results, files


def ours(tile: int, precision: str, model=None) -> tuple[str, str]:
    """The case of our codec with these settings (None: the shipped model)."""
    return "ours", json.dumps([model, tile, precision])


def measure(
    folder: Path, *, old, before, models, threads: int, tile: int, repeats: int
) -> dict:
    from hvae_compress import codec
    from hvae_compress.evaluation.metrics import edge_error_ratio, psnr

    from .run import machine

    source = folder / "mosaic.png"
    mosaic().save(source)
    reference = Image.open(source).convert("RGB")
    pixels = SIZE[0] * SIZE[1]
    quality = {}
    cases = {
        f"hvae tiles of {tile} px": ours(tile, "auto"),
        f"hvae tiles of {tile} px, fp32": ours(tile, "fp32"),
        f"hvae tiles of {tile} px, bf16": ours(tile, "bf16"),
        "hvae whole": ours(0, "auto"),
        "pillow webp q75": ("pillow", "WEBP"),
        "pillow avif q75": ("pillow", "AVIF"),
        "compressai mbt2018-mean": ("compressai", REPO),
    }
    for model in models:
        name = Path(model).stem
        if Path(model).is_file():  # else a shipped model's name
            model = str(Path(model).resolve())
        cases[f"hvae {name}, tiles of {tile} px"] = ours(tile, "auto", model)
        cases[f"hvae {name}, tiles of {tile} px, bf16"] = ours(tile, "bf16", model)
    if before:
        cases[f"hvae {before[0]}"] = ("installed", before[1])
    if old:
        cases[f"hvae {old} (tiles)"] = ("old", worktree(old, folder / "old"))
    results, files = run_rounds(cases, source, folder, "", threads, repeats)
    for name, (coded, decoded) in files.items():
        if coded != "-":
            image = Image.open(decoded).convert("RGB")
            quality[name] = {
                "bpp": 8 * Path(coded).stat().st_size / pixels,
                "psnr": psnr(reference, image),
                "edge_error_ratio": edge_error_ratio(reference, image),
            }
    if old:
        remove_worktree(folder / "old")
    return {
        "size": SIZE,
        "threads": threads,
        "repeats": repeats,
        "machine": machine(),
        "auto_precision": codec.Codec(None, "cpu").arithmetic,
        "speed_memory": results,
        "quality": quality,
    }


def measure_huge(folder: Path, before, threads: int) -> dict:
    """The 50-megapixel case: ours (default tiles) and, if given, an earlier
    version, each encoding and decoding in fresh processes."""
    source = folder / "huge.png"
    mosaic().resize(HUGE_SIZE, Image.Resampling.BICUBIC).save(source)
    cases = {"hvae (default tiles)": ours(512, "auto")}
    if before:
        cases[f"hvae {before[0]}"] = ("installed", before[1])
    results, _ = run_rounds(cases, source, folder, "huge", threads, 1)
    return {"size": HUGE_SIZE, "speed_memory": results}


def markdown(results: dict) -> str:
    lines = [
        "# Large photos (4000x2667 mosaic of four Kodak images, quality 50 / 75)",
        "",
        "Written by `python -m benchmarks.large`; each case a fresh process, "
        f"{results['threads']} torch threads. Time of the coding call (fastest of "
        f"{results['repeats']} runs, the cases taking turns); peak = the "
        "highest of their peak resident memories (imports, model and image "
        "included). "
        f"Machine: {results['machine']['cpu']} ({results['machine']['kernels']}); "
        f"our default precision there: {results['auto_precision']}.",
        "",
        "| codec | encode s | decode s | encode peak MB | decode peak MB | bpp | "
        "PSNR dB | worst edge ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, row in results["speed_memory"].items():
        q = results["quality"].get(name)
        measured = (
            f"{q['bpp']:.4f} | {q['psnr']:.2f} | {q['edge_error_ratio']:.2f}"
            if q
            else "- | - | -"
        )
        lines.append(
            f"| {name} | {row['encode']['seconds']:.2f} | "
            f"{row['decode']['seconds']:.2f} | {row['encode']['peak_mb']:.0f} | "
            f"{row['decode']['peak_mb']:.0f} | {measured} |"
        )
    lines += [
        "",
        "Worst edge ratio: at every multiple of 64 px, the gradient error "
        "|Δdecoded − Δsource| over its mean on the 14 neighbouring boundaries "
        "(`evaluation.metrics.edge_error_ratio`); about 1 where no seam shows.",
    ]
    huge = results.get("huge")
    if huge:
        width, height = huge["size"]
        lines += [
            "",
            f"## {width}x{height} ({width * height / 1e6:.0f} megapixels), quality 50",
            "",
            "| codec | encode s | decode s | encode peak MB | decode peak MB |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for name, row in huge["speed_memory"].items():
            lines.append(
                f"| {name} | {row['encode']['seconds']:.2f} | "
                f"{row['decode']['seconds']:.2f} | {row['encode']['peak_mb']:.0f} | "
                f"{row['decode']['peak_mb']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    from .run import write_results

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--old",
        default=None,
        help="also run the codec of this commit (one from before the package "
        "layout, such as 86b5011)",
    )
    parser.add_argument(
        "--before",
        default=None,
        metavar="REF",
        help="also run the package as of this commit (installed on its own), "
        "at 12 and, with --huge, at 50 megapixels",
    )
    parser.add_argument(
        "--huge",
        action="store_true",
        help="also measure a 50-megapixel image (about 3 minutes a codec)",
    )
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME_OR_PATH",
        help="also run ours with this shipped model or these weights "
        "(repeatable; named by the file's stem), in the default precision and "
        "in bfloat16",
    )
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="runs of each 12-megapixel case; the fastest time is kept (the "
        "50-megapixel cases run once)",
    )
    parser.add_argument("--tile", type=int, default=512, help="our tile size (px)")
    parser.add_argument("--out", default=str(HERE / "large.json"), help="results JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        before = None
        if args.before:
            before = (args.before, installed(args.before, folder / "before"))
        results = measure(
            folder,
            old=args.old,
            before=before,
            models=args.model,
            threads=args.threads,
            tile=args.tile,
            repeats=args.repeats,
        )
        if args.huge:
            results["huge"] = measure_huge(folder, before, args.threads)
    write_results(results, args.out, markdown)


if __name__ == "__main__":
    main()
