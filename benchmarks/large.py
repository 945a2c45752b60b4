"""Large photos: seams, memory and speed on a 12-megapixel image, side by side.

    python -m benchmarks.large [--old REF]   # writes benchmarks/large.{json,md}

The image: four Kodak photos side by side (2 x 2), upscaled to 4000x2667, so
that it is smooth at pixel level like a phone photo. In one run, on this
machine, each case in a fresh process (time of the coding call, peak resident
memory of the process):

- ours at quality 50 with the default tile size, and processed whole;
- with ``--old REF``, the codec of an earlier commit (a git worktree of it,
  with its own shipped weights), e.g. the last release that coded large
  images in independent tiles;
- Pillow's WebP and AVIF, and CompressAI's mbt2018-mean (random weights).

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
    coder = codec.Codec(None, "cpu", tile_size=int(option))
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


def measure(folder: Path, old: str | None, threads: int, tile: int) -> dict:
    from hvae_compress.evaluation.metrics import edge_error_ratio, psnr

    source = folder / "mosaic.png"
    mosaic().save(source)
    reference = Image.open(source).convert("RGB")
    pixels = SIZE[0] * SIZE[1]
    results, quality = {}, {}
    cases = {
        f"hvae tiles of {tile} px": ("ours", tile, ".hvae"),
        "hvae whole": ("ours", 0, ".hvae"),
        "pillow webp q75": ("pillow", "WEBP", ".webp"),
        "pillow avif q75": ("pillow", "AVIF", ".avif"),
        "compressai mbt2018-mean": ("compressai", REPO, None),
    }
    if old:
        cases[f"hvae {old} (tiles)"] = ("old", worktree(old, folder / "old"), ".hvae")
    for number, (name, (kind, option, suffix)) in enumerate(cases.items()):
        coded = folder / f"case{number}{suffix}" if suffix else "-"
        decoded = folder / f"case{number}.png" if suffix else "-"
        encode = run_case(kind, "encode", source, coded, option, threads)
        print(f"  {name}: encode {encode['seconds']:.2f} s", flush=True)
        decode_from = coded if suffix else source
        decode = run_case(kind, "decode", decode_from, decoded, option, threads)
        print(f"  {name}: decode {decode['seconds']:.2f} s", flush=True)
        results[name] = {"encode": encode, "decode": decode}
        if suffix:
            image = Image.open(decoded).convert("RGB")
            quality[name] = {
                "bpp": 8 * Path(coded).stat().st_size / pixels,
                "psnr": psnr(reference, image),
                "edge_error_ratio": edge_error_ratio(reference, image),
            }
    if old:
        subprocess.run(
            ["git", "-C", str(REPO), "worktree", "remove", "--force", folder / "old"],
            check=True,
        )
    return {
        "size": SIZE,
        "threads": threads,
        "speed_memory": results,
        "quality": quality,
    }


def markdown(results: dict) -> str:
    lines = [
        "# Large photos (4000x2667 mosaic of four Kodak images, quality 50 / 75)",
        "",
        "Written by `python -m benchmarks.large`; each case a fresh process, "
        f"{results['threads']} torch threads. Time of the coding call; peak = the "
        "process's peak resident memory (imports, model and image included).",
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
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", default=None, help="also run the codec of this commit")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--tile", type=int, default=512, help="our tile size (px)")
    parser.add_argument("--out", default=str(HERE / "large.json"), help="results JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        results = measure(Path(folder), args.old, args.threads, args.tile)
    out = Path(args.out)
    out.write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
