"""Tiled execution: run local blocks over large maps tile by tile, as if whole.

Every block of the networks is local: a 3x3 convolution reads one neighbour on
each side, so a block of k of them reads k positions around each output. Run on
a tile plus a halo of k positions, a block computes the tile's own outputs from
exactly the inputs it would see on the whole map (the halo is clipped at the
map's edges, where the convolutions pad with zeros either way), so tiled and
whole runs agree: exactly for the integer scale network, up to float rounding
for the float network. There are no seams to hide, and memory holds the maps
at one level plus one tile's intermediates, never a whole map's.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import torch

Maps = torch.Tensor | tuple[torch.Tensor, ...]


def run_whole(fn: Callable[..., Maps], *maps: torch.Tensor, **_) -> Maps:
    """The untiled runner: fn on the whole maps."""
    return fn(*maps)


class Tiler:
    """Runs ``fn(*maps)`` tile by tile.

    Args:
        tile_pixels: the tile edge in image pixels; on a map of stride s a tile
            spans tile_pixels / s positions (at least ``min_positions``).
    """

    def __init__(self, tile_pixels: int, min_positions: int = 16):
        self.tile_pixels = tile_pixels
        self.min_positions = min_positions

    def __call__(
        self,
        fn: Callable[..., Maps],
        *maps: torch.Tensor,
        stride: int,
        halo: int,
        scale: Fraction | int = 1,
    ) -> Maps:
        """Run fn over the maps (same size, stride ``stride``) in tiles.

        Args:
            halo: positions of context each output needs on every side.
            scale: output size / input size (2 for an upsampling, 1/8 from
                pixels to stride 8); tiles and halos are aligned to it.
        """
        scale = Fraction(scale)
        height, width = maps[0].shape[-2:]
        tile = max(self.tile_pixels // stride, self.min_positions)
        # Tiles and halos must map to whole output positions.
        tile = max(scale.denominator, tile - tile % scale.denominator)
        halo = -(-halo // scale.denominator) * scale.denominator
        if height <= tile and width <= tile:
            return fn(*maps)
        outputs, single = None, True
        for top in range(0, height, tile):
            for left in range(0, width, tile):
                bottom, right = min(top + tile, height), min(left + tile, width)
                y0, x0 = max(0, top - halo), max(0, left - halo)
                y1, x1 = min(height, bottom + halo), min(width, right + halo)
                pieces = fn(*(m[..., y0:y1, x0:x1] for m in maps))
                single = isinstance(pieces, torch.Tensor)
                pieces = (pieces,) if single else pieces
                if outputs is None:
                    outputs = [_allocate(p, height, width, scale) for p in pieces]
                core = (top - y0, bottom - y0, left - x0, right - x0)
                target = (top, bottom, left, right)
                for out, piece in zip(outputs, pieces, strict=True):
                    out[_window(target, scale)] = piece[_window(core, scale)]
        return outputs[0] if single else tuple(outputs)


def _allocate(piece: torch.Tensor, height: int, width: int, scale: Fraction):
    shape = (*piece.shape[:-2], int(height * scale), int(width * scale))
    out = torch.empty(shape, dtype=piece.dtype, device=piece.device)
    if piece.ndim == 4 and piece.is_contiguous(memory_format=torch.channels_last):
        out = out.contiguous(memory_format=torch.channels_last)
    return out


def _window(box: tuple[int, int, int, int], scale: Fraction) -> tuple:
    top, bottom, left, right = (int(v * scale) for v in box)
    return (..., slice(top, bottom), slice(left, right))
