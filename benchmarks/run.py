"""Speed, memory, start-up and entropy-coding benchmarks, side by side with peers.

    python -m benchmarks.run                 # writes benchmarks/results.{json,md}

Everything runs in one invocation on this machine, with the same thread count
for every codec (2 by default), so the ratios are fair even on a noisy machine:
our shipped model at three qualities, CompressAI's bmshj2018-hyperprior and
mbt2018-mean (random weights, pretrained=False, which does not change their
speed, after update()), and Pillow's JPEG, WebP and AVIF. Times are medians of
several runs after a warm-up. Memory is the peak resident set of a fresh
process per case. A GPU section runs where CUDA is available. Large photos
(seams, memory, whole vs tiled processing) have their own benchmark,
`benchmarks/large.py`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hvae_compress import codec, models
from hvae_compress.entropy import AnsBackend

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
KODAK = REPO.parent / "shared" / "datasets" / "kodak"
TRAIN = REPO.parent / "shared" / "datasets" / "train" / "00"
# The studies measure on training photos, never on Kodak.
STUDY_PHOTOS = REPO.parent / "shared" / "datasets" / "train" / "04"
QUALITIES = {"low": 10, "medium": 50, "high": 90}
LARGE_SIZE = (4000, 3000)


def kodak_image() -> Image.Image:
    return Image.open(KODAK / "kodim01.png").convert("RGB")


def large_image() -> Image.Image:
    """A 4000x3000 photo: a training image upscaled (Lanczos)."""
    source = sorted(TRAIN.glob("unsplash_*"))[0]
    return (
        Image.open(source).convert("RGB").resize(LARGE_SIZE, Image.Resampling.LANCZOS)
    )


def study_photos(count: int) -> list[Path]:
    """``count`` photos of train/04 spread evenly over its sorted names."""
    paths = sorted(STUDY_PHOTOS.glob("*.jpg"))
    return paths[:: max(1, len(paths) // count)][:count]


def timed_runs(function, runs: int) -> list[float]:
    """Seconds of each of ``runs`` calls, after one warm-up call (the first call
    builds oneDNN's kernels and fills caches)."""
    function()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def median_seconds(function, runs: int) -> float:
    return statistics.median(timed_runs(function, runs))


def fastest_seconds(function, runs: int) -> float:
    """On a shared machine other work only adds time: the fastest run is the cost."""
    return min(timed_runs(function, runs))


# --- the codecs, each as (encode -> data, decode(data)) ------------------------------


def ours(coder: codec.Codec, quality: float):
    def encode(image):
        return coder.encode(image, quality=quality)

    return encode, coder.decode


def compressai_model(name: str):
    """A CompressAI zoo model with random weights, its tables frozen by update()."""
    from compressai import zoo

    net = getattr(zoo, name)(quality=4, pretrained=False).eval()
    net.update(force=True)

    def to_tensor(image):
        x = (
            torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None].float()
            / 255
        )
        height, width = x.shape[-2:]
        pad = (0, -width % 64, 0, -height % 64)
        return torch.nn.functional.pad(x, pad, mode="replicate")

    @torch.inference_mode()
    def encode(image):
        return net.compress(to_tensor(image))

    @torch.inference_mode()
    def decode(data):
        return net.decompress(data["strings"], data["shape"])["x_hat"]

    return encode, decode


def pillow_codec(image_format: str, **options):
    def encode(image):
        buffer = io.BytesIO()
        image.save(buffer, format=image_format, **options)
        return buffer.getvalue()

    def decode(data):
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return image

    return encode, decode


def peers(coder: codec.Codec) -> dict:
    codecs = {
        f"hvae {coder.name} q{q} ({level})": ours(coder, q)
        for level, q in QUALITIES.items()
    }
    codecs["compressai bmshj2018-hyperprior"] = compressai_model("bmshj2018_hyperprior")
    codecs["compressai mbt2018-mean"] = compressai_model("mbt2018_mean")
    codecs["pillow jpeg q75"] = pillow_codec("JPEG", quality=75)
    codecs["pillow webp q75"] = pillow_codec("WEBP", quality=75)
    codecs["pillow avif q75"] = pillow_codec("AVIF", quality=75)
    return codecs


def speed(
    coder: codec.Codec, images: dict[str, Image.Image], runs: dict[str, int]
) -> dict:
    """Median encode and decode seconds of every codec on every image."""
    results = {}
    for image_name, image in images.items():
        for codec_name, (encode, decode) in peers(coder).items():
            data = encode(image)
            key = f"{codec_name} | {image_name}"
            results[key] = {
                "codec": codec_name,
                "image": image_name,
                "encode_s": median_seconds(lambda: encode(image), runs[image_name]),  # noqa: B023
                "decode_s": median_seconds(lambda: decode(data), runs[image_name]),  # noqa: B023
            }
            print(
                f"  {key:56} encode {results[key]['encode_s']:.3f} s, "
                f"decode {results[key]['decode_s']:.3f} s",
                flush=True,
            )
    return results


def ratios(results: dict, reference: str) -> dict:
    """Each codec's time divided by the reference codec's, per image."""
    table = {}
    for row in results.values():
        ref = results[f"{reference} | {row['image']}"]
        table[f"{row['codec']} | {row['image']}"] = {
            "encode": row["encode_s"] / ref["encode_s"],
            "decode": row["decode_s"] / ref["decode_s"],
        }
    return table


# --- entropy coding -------------------------------------------------------------------


class TimedBackend:
    """Wraps the ANS backend to count symbols and the seconds spent coding."""

    def __init__(self, backend: AnsBackend):
        self.backend = backend
        self.tables = backend.tables
        self.reset()

    def reset(self):
        self.symbols = 0
        self.seconds = 0.0

    def encode(self, symbols, indexes):
        start = time.perf_counter()
        data = self.backend.encode(symbols, indexes)
        self.seconds += time.perf_counter() - start
        self.symbols += symbols.size
        return data

    def decode(self, data, indexes):
        start = time.perf_counter()
        symbols = self.backend.decode(data, indexes)
        self.seconds += time.perf_counter() - start
        self.symbols += symbols.size
        return symbols


def entropy_coding(coder: codec.Codec, image: Image.Image) -> dict:
    """Symbols per second, share of the total time, stream bits vs information."""
    timed = TimedBackend(coder.backend)
    coder.backend = timed
    results = {}
    try:
        for level, quality in QUALITIES.items():
            coder.encode(image, quality=quality)  # warm-up
            timed.reset()
            start = time.perf_counter()
            report = coder.encode_report(image, quality=quality)
            encode_total = time.perf_counter() - start
            encode_symbols, encode_seconds = timed.symbols, timed.seconds
            timed.reset()
            start = time.perf_counter()
            coder.decode(report.data)
            decode_total = time.perf_counter() - start
            header = codec.read_header(report.data)
            stream_bits = [8 * r.num_bytes for r in header.layers]
            results[level] = {
                "symbols": encode_symbols,
                "encode_symbols_per_s": encode_symbols / encode_seconds,
                "decode_symbols_per_s": timed.symbols / timed.seconds,
                "encode_share": encode_seconds / encode_total,
                "decode_share": timed.seconds / decode_total,
                "stream_over_table_ideal": [
                    b / i for b, i in zip(stream_bits, report.table_bits, strict=True)
                ],
                "stream_over_model_estimate": [
                    b / e
                    for b, e in zip(stream_bits, report.estimated_bits, strict=True)
                ],
                "total_stream_over_table_ideal": sum(stream_bits)
                / sum(report.table_bits),
            }
    finally:
        coder.backend = timed.backend
    return results


# --- memory and start-up, in fresh processes ----------------------------------------


MEMORY_SCRIPT = """
import sys
from hvae_compress import codec
from benchmarks.run import kodak_image, large_image, peak_rss_bytes
operation, size, model, data_file = sys.argv[1:]
coder = codec.Codec(model or None, "cpu")
image = kodak_image() if size == "kodak" else large_image()
data = open(data_file, "rb").read()
baseline = peak_rss_bytes()
if operation == "encode":
    coder.encode(image, quality=50)
else:
    coder.decode(data)
print(baseline, peak_rss_bytes())
"""


def peak_rss_bytes() -> int:
    """This process's peak resident set since its exec.

    Linux keeps getrusage's ru_maxrss across exec, so a child started by a big
    parent would report the parent's peak; VmHWM belongs to the new image.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def run_python(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
    )


def memory(coder: codec.Codec, model: str | None, images: dict) -> dict:
    """Peak resident memory of one encode and one decode per image size.

    Each runs in a fresh process; the baseline is that process after imports,
    model load and reading the input, the peak includes the coding itself.
    """
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for size, image in images.items():
            data_file = Path(folder, f"{size}.hvae")
            data_file.write_bytes(coder.encode(image, quality=50))
            key = "kodak" if size == "kodak" else "large"
            for operation in ("encode", "decode"):
                output = run_python(
                    MEMORY_SCRIPT, operation, key, model or "", str(data_file)
                )
                baseline, peak = map(int, output.stdout.split())
                results[f"{operation} {size}"] = {
                    "baseline_rss_bytes": baseline,
                    "peak_rss_bytes": peak,
                }
    return results


def startup(model: str | None, runs: int = 5) -> dict:
    """Wall time of `hvae-compress --help`, of `info` (which loads no networks)
    and of a first encode, each in a fresh process."""

    def timed(*args):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "hvae_compress", *args],
            check=True,
            cwd=REPO,
            capture_output=True,
        )
        return time.perf_counter() - start

    sample = REPO / "codec" / "data" / "sample.png"
    encode_args = ["encode", str(sample), "-o", "/dev/null", "--force", "--quiet"]
    if model:
        encode_args += ["--model", model]
    timed("--help")  # warm the file cache
    with tempfile.TemporaryDirectory() as folder:
        encoded = Path(folder, "sample.hvae")
        encoded.write_bytes(codec.encode(sample, quality=50, model=model))
        info_s = statistics.median(timed("info", str(encoded)) for _ in range(runs))
    return {
        "help_s": statistics.median(timed("--help") for _ in range(runs)),
        "info_s": info_s,
        "first_encode_s": statistics.median(timed(*encode_args) for _ in range(3)),
    }


# --- GPU ----------------------------------------------------------------------------


def gpu(model: str | None) -> dict:
    if not torch.cuda.is_available():
        return {"available": False}
    coder = codec.Codec(model, "cuda")
    image = kodak_image()
    megapixels = image.width * image.height / 1e6
    encode_s = median_seconds(lambda: coder.encode(image), 10)
    data = coder.encode(image)
    decode_s = median_seconds(lambda: coder.decode(data), 10)
    return {
        "available": True,
        "device": torch.cuda.get_device_name(),
        "encode_megapixels_per_s": megapixels / encode_s,
        "decode_megapixels_per_s": megapixels / decode_s,
    }


# --- report -------------------------------------------------------------------------


def write_results(results: dict, out: str | Path, markdown) -> None:
    """Write ``results`` as JSON to ``out`` and, rendered by ``markdown``, to
    the .md beside it (what gets committed), and print the Markdown."""
    out = Path(out)
    out.write_text(json.dumps(results, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))


def machine() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        # The widest kernels ATen dispatches to, and whether oneDNN computes bf16
        # natively: CPUs that share a model name differ in both.
        "kernels": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": models.native_bf16(torch.device("cpu")),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
    }


def markdown(results: dict) -> str:
    lines = [
        "# Benchmark results",
        "",
        f"Written by `python -m benchmarks.run` on {results['machine']['date']}: "
        f"{results['machine']['cpu']}, {results['machine']['cpus']} CPUs, "
        f"{results['machine']['torch_threads']} torch threads, "
        f"torch {results['machine']['torch']}.",
        "",
        "## Speed (median seconds; ratio = time / mbt2018-mean's in the same run)",
        "",
        "| codec | image | encode s | decode s | encode ratio | decode ratio |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for key, row in results["speed"].items():
        ratio = results["ratio_vs_mbt2018_mean"][key]
        lines.append(
            f"| {row['codec']} | {row['image']} | {row['encode_s']:.3f} | "
            f"{row['decode_s']:.3f} | {ratio['encode']:.2f} | {ratio['decode']:.2f} |"
        )
    lines += [
        "",
        "## Peak resident memory (fresh process per case)",
        "",
        "| operation | after imports, model, input (MB) | peak (MB) |",
        "| --- | ---: | ---: |",
    ]
    for name, row in results["memory"].items():
        lines.append(
            f"| {name} | {row['baseline_rss_bytes'] / 2**20:.0f} | "
            f"{row['peak_rss_bytes'] / 2**20:.0f} |"
        )
    start = results["startup"]
    lines += [
        "",
        "## Start-up",
        "",
        f"- `hvae-compress --help`: {start['help_s']:.3f} s",
        f"- `hvae-compress info FILE` (reads the header, loads no networks): "
        f"{start['info_s']:.3f} s",
        f"- first `encode` in a fresh process (import, model load, encode of the "
        f"768x512 sample): {start['first_encode_s']:.2f} s",
        "",
        "## Entropy coding (Kodak kodim01)",
        "",
        "| quality | symbols | encode Msym/s | decode Msym/s | share of encode | "
        "share of decode | stream / ideal |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for level, row in results["entropy"].items():
        lines.append(
            f"| {level} | {row['symbols']:,} | "
            f"{row['encode_symbols_per_s'] / 1e6:.1f} | "
            f"{row['decode_symbols_per_s'] / 1e6:.1f} | "
            f"{100 * row['encode_share']:.1f} % | {100 * row['decode_share']:.1f} % | "
            f"{row['total_stream_over_table_ideal']:.4f} |"
        )
    gpu_result = results["gpu"]
    lines += ["", "## GPU", ""]
    if gpu_result["available"]:
        lines.append(
            f"{gpu_result['device']}: "
            f"encode {gpu_result['encode_megapixels_per_s']:.1f}"
            f" MP/s, decode {gpu_result['decode_megapixels_per_s']:.1f} MP/s"
        )
    else:
        lines.append("No CUDA GPU on this machine: not measured.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=None, help="model to benchmark (default: shipped)"
    )
    parser.add_argument(
        "--threads", type=int, default=2, help="torch threads (default: 2)"
    )
    parser.add_argument("--runs", type=int, default=5, help="timed runs per Kodak case")
    parser.add_argument(
        "--out",
        default=str(HERE / "results.json"),
        help="results JSON; a Markdown table is written beside it",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    coder = codec.Codec(args.model, "cpu")
    images = {"kodak": kodak_image(), "4000x3000": large_image()}
    print("speed", flush=True)
    results = {
        "machine": machine(),
        "model": coder.name,
        "speed": speed(coder, images, {"kodak": args.runs, "4000x3000": 2}),
    }
    results["ratio_vs_mbt2018_mean"] = ratios(
        results["speed"], "compressai mbt2018-mean"
    )
    print("entropy coding", flush=True)
    results["entropy"] = entropy_coding(coder, images["kodak"])
    print("memory and start-up", flush=True)
    results["memory"] = memory(coder, args.model, images)
    results["startup"] = startup(args.model)
    results["gpu"] = gpu(args.model)
    write_results(results, args.out, markdown)


if __name__ == "__main__":
    main()
