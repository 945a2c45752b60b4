"""The public API: `Codec`, `encode`, `decode`, `read_header`, `export_model`."""

from __future__ import annotations

import copy
import functools
import hashlib
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import models
from entropy import AnsBackend, CorruptStreamError, GaussianTables, build_tables

from .container import (
    HASH_BYTES,
    Header,
    LayerRecord,
    read_container,
    read_header,
    write_container,
)
from .image_io import (
    DEFAULT_MAX_PIXELS,
    SourceImage,
    decode_alpha,
    encode_alpha,
    load_image,
    to_pil,
)

DEFAULT_QUALITY = 75
DEFAULT_TILE_SIZE = 1024  # larger images are coded in tiles of this size


class ConversionWarning(UserWarning):
    """An input image was converted (e.g. 16 bits to 8) before encoding."""


@dataclass(frozen=True)
class Tile:
    """A rectangle of the image, in pixels."""

    top: int
    left: int
    height: int
    width: int

    @property
    def region(self) -> tuple[slice, slice]:
        """Index of the tile in an (H, W, ...) array."""
        return slice(self.top, self.top + self.height), slice(
            self.left, self.left + self.width
        )


def tile_grid(width: int, height: int, tile_size: int) -> list[Tile]:
    """The tiles of an image, row-major; tile_size 0 means one tile."""
    if tile_size == 0:
        return [Tile(0, 0, height, width)]
    return [
        Tile(top, left, min(tile_size, height - top), min(tile_size, width - left))
        for top in range(0, height, tile_size)
        for left in range(0, width, tile_size)
    ]


@dataclass
class EncodeReport:
    """The encoded bytes with what an evaluation wants to know about them.

    Attributes:
        data: the ``.hvae`` file contents.
        reconstruction: the encoder-side reconstruction (decoding ``data``
            reproduces it exactly), or None if not requested.
        estimated_bits: per layer, -log2 P of the symbols under the model's
            continuous prior: the rate the training loss sees.
        table_bits: per layer, -log2 P under the integer coding tables: the
            ideal size of the layer's stream.
        notes: conversions applied to the input (16-bit to 8-bit, ...).
    """

    data: bytes
    reconstruction: Image.Image | None
    estimated_bits: list[float]
    table_bits: list[float]
    notes: list[str] = field(default_factory=list)


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA GPU is available")
    return device


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    return (
        tensor.detach()
        .contiguous()
        .cpu()
        .reshape(-1)
        .view(torch.uint8)
        .numpy()
        .tobytes()
    )


def model_fingerprint(state_dict: dict, tables: GaussianTables) -> bytes:
    """First bytes of the SHA-256 of the stored weights and the coding tables."""
    digest = hashlib.sha256()
    for name in sorted(state_dict):
        tensor = state_dict[name]
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(_tensor_bytes(tensor))
    for name, array in sorted(tables.to_arrays().items()):
        digest.update(f"{name}:{array.dtype}:{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.digest()[:HASH_BYTES]


def _weights_key(checkpoint: dict) -> str:
    """Training checkpoints carry an EMA of the weights: the better model to code."""
    return "ema_state_dict" if "ema_state_dict" in checkpoint else "state_dict"


def _tables_of(checkpoint: dict) -> GaussianTables:
    stored = checkpoint.get("entropy_tables")
    if (
        stored is None
    ):  # a raw training checkpoint: build the (deterministic) tables now
        return build_tables(scale_min=checkpoint["config"]["scale_min"])
    return GaussianTables.from_arrays({k: v.numpy() for k, v in stored.items()})


def export_model(
    checkpoint_path: str | os.PathLike, out_path: str | os.PathLike
) -> None:
    """Freeze a training checkpoint for coding: EMA weights in fp16, integer tables.

    The result is what the package ships: small, and carrying the probability
    tables so decoders never recompute them from floats.
    """
    checkpoint = models.read_checkpoint(checkpoint_path)
    weights = checkpoint[_weights_key(checkpoint)]
    tables = build_tables(scale_min=checkpoint["config"]["scale_min"])
    frozen = {
        "format": checkpoint["format"],
        "config": checkpoint["config"],
        "state_dict": {
            k: v.half() if v.is_floating_point() else v for k, v in weights.items()
        },
        "step": checkpoint["step"],
        "rate_range": checkpoint["rate_range"],
        "train_info": checkpoint.get("train_info", {}),
        "entropy_tables": {
            k: torch.from_numpy(v) for k, v in tables.to_arrays().items()
        },
    }
    models.save_checkpoint(out_path, frozen)


def _load(model) -> tuple[models.HierarchicalVAE, GaussianTables, bytes]:
    """A model name, path or instance -> (network, coding tables, fingerprint)."""
    if isinstance(model, models.HierarchicalVAE):
        tables = build_tables(scale_min=model.config.scale_min)
        fingerprint = model_fingerprint(model.state_dict(), tables)
        # A copy: moving it to a device or memory format must not touch the caller's.
        return copy.deepcopy(model).eval(), tables, fingerprint
    if model is None:
        model = models.DEFAULT_MODEL
    path = Path(model)
    if not path.is_file():
        path = models.weights_path(str(model))
    checkpoint = models.read_checkpoint(path)
    key = _weights_key(checkpoint)
    tables = _tables_of(checkpoint)
    network = models.model_from_checkpoint(checkpoint, key)
    return network, tables, model_fingerprint(checkpoint[key], tables)


class Codec:
    """A loaded model and its entropy coder, for encoding and decoding many images.

    Args:
        model: a shipped model name (default: the shipped ``base`` model), a path
            to a checkpoint, or a `models.HierarchicalVAE` instance.
        device: "cpu", "cuda" or "auto"/None (a GPU when there is one).
        tile_size: images wider or taller than this are coded in independent
            tiles of this size (a multiple of the model's top stride), which
            bounds memory; 0 codes every image whole.
        max_pixels: the largest image accepted, on input and in headers.

    A Codec is safe to share between threads.
    """

    def __init__(
        self,
        model=None,
        device=None,
        tile_size: int = DEFAULT_TILE_SIZE,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        self.device = resolve_device(device)
        network, self.tables, self.fingerprint = _load(model)
        # channels_last: about 12 % faster convolutions on CPUs (benchmarks/).
        self.model = network.to(self.device, memory_format=torch.channels_last)
        self.config = self.model.config
        self.backend = AnsBackend(self.tables)
        stride = self.config.top_stride
        if tile_size < 0 or tile_size % stride:
            raise ValueError(
                f"tile_size must be 0 or a multiple of {stride}, got {tile_size}"
            )
        self.tile_size = tile_size
        self.max_pixels = max_pixels

    @property
    def name(self) -> str:
        return self.config.name

    # --- rate settings -------------------------------------------------------------

    def rate_settings(
        self, quality=None, lmbda=None, layer_weights=None
    ) -> tuple[float, tuple[float, ...]]:
        """Resolve quality / lmbda / layer weights to checked (lmbda, betas)."""
        config = self.config
        if quality is not None and lmbda is not None:
            raise ValueError("give a quality or a lambda, not both")
        if lmbda is None:
            lmbda = config.lmbda_for_quality(
                DEFAULT_QUALITY if quality is None else quality
            )
        elif not config.lmbda_min <= lmbda <= config.lmbda_max:
            raise ValueError(
                f"lambda must lie in the trained range [{config.lmbda_min:g}, "
                f"{config.lmbda_max:g}], got {lmbda:g}"
            )
        num_layers = config.num_latent_layers
        betas = (
            (1.0,) * num_layers
            if layer_weights is None
            else tuple(map(float, layer_weights))
        )
        if len(betas) != num_layers:
            raise ValueError(
                f"layer weights need {num_layers} values (top first), got {len(betas)}"
            )
        if not all(config.beta_min <= b <= config.beta_max for b in betas):
            raise ValueError(
                f"layer weights must lie in [{config.beta_min:g}, {config.beta_max:g}]"
            )
        return _float32(lmbda), tuple(map(_float32, betas))

    def _condition(self, lmbda: float, betas) -> tuple[torch.Tensor, torch.Tensor]:
        lmbda_t = torch.tensor([lmbda], device=self.device)
        return lmbda_t, torch.tensor([betas], device=self.device)

    # --- encoding --------------------------------------------------------------------

    def encode(self, image, *, quality=None, lmbda=None, layer_weights=None) -> bytes:
        """Encode an image (path, PIL image or uint8 array) to ``.hvae`` bytes.

        Args:
            quality: 0-100, higher is better (default 75); maps to lambda.
            lmbda: the rate-distortion trade-off itself, instead of a quality.
            layer_weights: one multiplier beta_l per latent layer, top first;
                raising a layer's weight moves bits out of it.
        """
        report = self._encode(image, quality, lmbda, layer_weights, False, False)
        for note in report.notes:
            warnings.warn(note, ConversionWarning, stacklevel=2)
        return report.data

    def encode_report(
        self,
        image,
        *,
        quality=None,
        lmbda=None,
        layer_weights=None,
        reconstruct: bool = False,
    ) -> EncodeReport:
        """Like `encode`, returning an `EncodeReport` with bit counts per layer."""
        return self._encode(image, quality, lmbda, layer_weights, reconstruct, True)

    def _encode(self, image, quality, lmbda, layer_weights, reconstruct, stats):
        lmbda, betas = self.rate_settings(quality, lmbda, layer_weights)
        source = load_image(image, self.max_pixels)
        tile_size = self._tile_size_for(source)
        tiles = tile_grid(source.width, source.height, tile_size)
        pixels = np.empty_like(source.rgb) if reconstruct else None
        coded = []
        for tile in tiles:
            tile_pixels = source.rgb[tile.region]
            coded.append(
                self._encode_tile(tile_pixels, lmbda, betas, reconstruct, stats)
            )
            if reconstruct:
                pixels[tile.region] = _to_uint8(coded[-1]["x_hat"], tile)
        header = Header(
            mode=source.mode,
            width=source.width,
            height=source.height,
            tile_size=tile_size,
            model_name=self.name,
            model_hash=self.fingerprint,
            lmbda=lmbda,
            betas=betas,
            layers=self._layer_records(tiles),
        )
        alpha = encode_alpha(source.alpha) if source.alpha is not None else b""
        streams = _per_layer([c["streams"] for c in coded])
        data = write_container(header, streams, source.icc_profile, alpha)
        reconstruction = None
        if reconstruct:
            reconstruction = to_pil(
                pixels, source.mode, source.alpha, source.icc_profile
            )
        return EncodeReport(
            data,
            reconstruction,
            [sum(bits) for bits in _per_layer([c["estimated_bits"] for c in coded])],
            [sum(bits) for bits in _per_layer([c["table_bits"] for c in coded])],
            source.notes,
        )

    def _encode_tile(self, pixels, lmbda, betas, reconstruct, stats) -> dict:
        """One tile -> its per-layer streams (and bit counts, x_hat if asked)."""
        x = self._to_tensor(pixels)
        out = self.model.compress(x, *self._condition(lmbda, betas), reconstruct)
        coded = {"streams": [], "estimated_bits": [], "table_bits": []}
        coded["x_hat"] = out["x_hat"]
        for symbols, scales in zip(out["symbols"], out["scales"], strict=True):
            symbols_np = symbols.cpu().numpy()
            indexes = self.tables.indexes(scales.cpu().numpy())
            coded["streams"].append(self.backend.encode(symbols_np, indexes))
            if stats:
                coded["estimated_bits"].append(_estimated_bits(symbols, scales))
                bits = self.tables.information_bits(symbols_np, indexes)
                coded["table_bits"].append(bits)
        return coded

    def _tile_size_for(self, source: SourceImage) -> int:
        fits = source.width <= self.tile_size and source.height <= self.tile_size
        return 0 if self.tile_size == 0 or fits else self.tile_size

    def _to_tensor(self, pixels: np.ndarray) -> torch.Tensor:
        """(h, w, 3) uint8 -> (1, 3, H, W) in [0, 1], edge-padded to the stride."""
        x = (
            torch.tensor(pixels, device=self.device).permute(2, 0, 1)[None].float()
            / 255
        )
        stride = self.config.top_stride
        height, width = pixels.shape[:2]
        x = F.pad(x, (0, -width % stride, 0, -height % stride), mode="replicate")
        return x.contiguous(memory_format=torch.channels_last)

    def _layer_records(self, tiles: list[Tile]) -> tuple[LayerRecord, ...]:
        """Expected latent shapes, summed over the tile rows and columns."""
        stride = self.config.top_stride
        row_tiles = [t for t in tiles if t.left == 0]
        col_tiles = [t for t in tiles if t.top == 0]
        records = []
        for channels, layer_stride in zip(
            self.config.layer_channels(), self.config.layer_strides(), strict=True
        ):
            rows = sum(
                math.ceil(t.height / stride) * stride // layer_stride for t in row_tiles
            )
            cols = sum(
                math.ceil(t.width / stride) * stride // layer_stride for t in col_tiles
            )
            records.append(LayerRecord(channels, rows, cols, 0, ()))
        return tuple(records)

    # --- decoding --------------------------------------------------------------------

    def decode(self, data: bytes, *, layers: int | None = None) -> Image.Image:
        """Decode ``.hvae`` bytes to a PIL image in the original mode and size.

        Args:
            layers: decode only the top ``layers`` latent layers (progressive
                decoding); the others take their prior means. The file may then
                be cut off after those layers' streams.

        Raises:
            CorruptStreamError: damaged, truncated or foreign data, or a file
                written by a different model.
        """
        num_layers = self.config.num_latent_layers
        if layers is not None and not 1 <= layers <= num_layers:
            raise ValueError(f"layers must be in [1, {num_layers}], got {layers}")
        container = read_container(data, layers, self.max_pixels)
        header = container.header
        self._check_compatible(header)
        tiles = tile_grid(header.width, header.height, header.tile_size)
        used = num_layers if layers is None else layers
        rgb = np.empty((header.height, header.width, 3), np.uint8)
        for t, tile in enumerate(tiles):
            tile_streams = [
                s[t] if s is not None and i < used else None
                for i, s in enumerate(container.layer_streams)
            ]
            rgb[tile.region] = self._decode_tile(tile, tile_streams, header)
        alpha = None
        if header.mode.endswith("A"):
            alpha = decode_alpha(container.alpha_png, (header.width, header.height))
        return to_pil(rgb, header.mode, alpha, container.icc_profile)

    def _check_compatible(self, header: Header) -> None:
        if header.model_name != self.name or header.model_hash != self.fingerprint:
            raise CorruptStreamError(
                f"file was written by model {header.model_name!r} "
                f"({header.model_hash.hex()}), "
                f"this codec holds {self.name!r} ({self.fingerprint.hex()})"
            )
        if header.tile_size % self.config.top_stride:
            raise CorruptStreamError(
                f"tile size {header.tile_size} is not a multiple of the model's stride"
            )
        tiles = tile_grid(header.width, header.height, header.tile_size)
        expected = self._layer_records(tiles)
        found = [(r.channels, r.rows, r.cols) for r in header.layers]
        if found != [(r.channels, r.rows, r.cols) for r in expected]:
            raise CorruptStreamError(
                "latent layer shapes do not match the image size and model"
            )

    def _decode_tile(
        self, tile: Tile, streams: list[bytes | None], header: Header
    ) -> np.ndarray:
        stride = self.config.top_stride
        grid = (math.ceil(tile.height / stride), math.ceil(tile.width / stride))

        def read_symbols(layer: int, scales: torch.Tensor):
            if streams[layer] is None:
                return None
            indexes = self.tables.indexes(scales.cpu().numpy())
            symbols = self.backend.decode(streams[layer], indexes)
            return torch.from_numpy(symbols).to(self.device)

        out = self.model.decompress(
            grid, *self._condition(header.lmbda, header.betas), read_symbols
        )
        return _to_uint8(out["x_hat"], tile)


def _per_layer(per_tile: list[list]) -> list[list]:
    """[tile][layer] -> [layer][tile]."""
    return [list(layer) for layer in zip(*per_tile, strict=True)]


def _float32(value: float) -> float:
    """The container stores float32: encode with the value a decoder reads back."""
    return float(np.float32(value))


def _estimated_bits(symbols: torch.Tensor, scales: torch.Tensor) -> float:
    """-log2 P(symbols) under the continuous prior (residuals: the mean is 0)."""
    zeros = torch.zeros_like(scales)
    return float(
        -torch.log2(models.latent_likelihood(symbols.float(), zeros, scales)).sum()
    )


def _to_uint8(x_hat: torch.Tensor, tile: Tile) -> np.ndarray:
    """(1, 3, H, W) float -> (h, w, 3) uint8, cropped to the tile."""
    pixels = x_hat[0, :, : tile.height, : tile.width].clamp(0, 1).mul(255).round()
    return pixels.to(torch.uint8).permute(1, 2, 0).cpu().numpy()


# --- module-level convenience functions --------------------------------------------


@functools.lru_cache(maxsize=4)
def _cached_codec(model: str | None, device: str | None) -> Codec:
    return Codec(model, device)


def _codec_for(model, device) -> Codec:
    if isinstance(model, Codec):
        return model
    if model is None or isinstance(model, (str, os.PathLike)):
        return _cached_codec(
            None if model is None else str(model),
            None if device is None else str(device),
        )
    return Codec(model, device)


def encode(
    image, *, quality=None, lmbda=None, layer_weights=None, model=None, device=None
) -> bytes:
    """Encode an image (path, PIL image or uint8 numpy array) to ``.hvae`` bytes.

    Uses the shipped default model unless ``model`` names another one (a shipped
    name, a checkpoint path or a loaded `Codec`). See `Codec.encode`.
    """
    codec = _codec_for(model, device)
    return codec.encode(
        image, quality=quality, lmbda=lmbda, layer_weights=layer_weights
    )


def decode(data: bytes, *, layers=None, model=None, device=None) -> Image.Image:
    """Decode ``.hvae`` bytes to a PIL image. See `Codec.decode`.

    Without ``model``, the shipped model named in the file is used.
    """
    model = model if model is not None else shipped_model_for(data)
    return _codec_for(model, device).decode(data, layers=layers)


def shipped_model_for(data: bytes) -> str:
    """The name of the shipped model that wrote ``data`` (a clear error if none)."""
    name = read_header(data).model_name
    if name not in models.shipped_models():
        raise ValueError(
            f"the file was written by model {name!r}, which is not shipped with this "
            "package; pass its checkpoint with --model"
        )
    return name
