"""Shared fixtures: a deterministic tiny model, its codec, and small test images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hvae_compress import codec, models

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
KODAK = SHARED / "datasets" / "kodak"
TRAIN_00 = SHARED / "datasets" / "train" / "00"
ANCHORS = SHARED / "anchors" / "kodak"

# Tests that read the shared datasets or published curves skip in a bare clone;
# .ci/run insists on ../shared, so CI always runs them.
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(),
    reason="needs ../shared (datasets and published curves beside the clone)",
)


def make_tiny_model(seed: int = 0, config="tiny") -> models.HierarchicalVAE:
    """An untrained tiny model whose posterior means and scales are stirred up.

    Its weights come from numpy's PCG64 generator, whose uniform doubles are the
    same on every machine (torch's seeded normals depend on the CPU's vector
    unit), so that the pinned golden file is pinned everywhere. Untrained,
    mu_q stays within +-0.5 of mu_p and every symbol would be 0; scaled up, the
    symbols span wide alphabets (escapes included), which is what round trips
    need to exercise. The scale network's weights get noise so that its scales
    (and table indexes) vary from symbol to symbol.
    """
    rng = np.random.default_rng(seed)

    def uniform(like: torch.Tensor, bound: float) -> torch.Tensor:
        values = rng.random(like.numel()) * 2 - 1
        return torch.from_numpy(values * bound).float().view_as(like)

    model = models.build_model(config)
    with torch.no_grad():
        for _, parameter in sorted(model.named_parameters()):
            if not parameter.any():
                continue  # zero-initialized on purpose (blocks start as identity)
            fan_in = parameter[0].numel() if parameter.ndim > 1 else 100
            parameter.copy_(uniform(parameter, fan_in**-0.5))
        for level in model.latent_blocks:
            for block in level:
                block.posterior_head.weight.mul_(40)
        for _, parameter in sorted(model.scale_network.named_parameters()):
            parameter.add_(uniform(parameter, 0.5))
    model.refresh_grids()
    return model.eval()


def natural_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth random colour fields plus fine noise: (H, W, 3) uint8."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width, 1)
    planes = [
        np.sin(6 * x * rng.uniform(0.5, 2) + rng.uniform(0, 6))
        + np.cos(5 * y * rng.uniform(0.5, 2) + rng.uniform(0, 6))
        for _ in range(3)
    ]
    image = 127 + 50 * np.stack(planes, axis=-1) + rng.normal(0, 8, (height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def tiny_model() -> models.HierarchicalVAE:
    return make_tiny_model()


@pytest.fixture(scope="session")
def tiny_codec(tiny_model) -> codec.Codec:
    return codec.Codec(tiny_model, device="cpu")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, tiny_model) -> Path:
    """The tiny model frozen for coding (fp16 weights + entropy tables) in a file."""
    folder = tmp_path_factory.mktemp("tiny")
    models.save_checkpoint(
        folder / "raw.pt", models.checkpoint_dict(tiny_model, step=0)
    )
    codec.export_model(folder / "raw.pt", folder / "tiny.pt")
    return folder / "tiny.pt"


@pytest.fixture(scope="session")
def training_folder(tmp_path_factory) -> Path:
    """Twelve synthetic photos, enough for the tiny model's training runs."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("train")
    for seed in range(12):
        image = Image.fromarray(natural_image(96, 128, seed=100 + seed))
        image.save(folder / f"photo{seed}.jpg", quality=95)
    return folder


@pytest.fixture
def image_file(tmp_path) -> Path:
    """A 96x80 RGB PNG."""
    from PIL import Image

    path = tmp_path / "image.png"
    Image.fromarray(natural_image(80, 96)).save(path)
    return path
