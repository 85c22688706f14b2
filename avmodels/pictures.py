"""Pictures a person can look at: batches of [-1, 1] images as PNG grids."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """N x 3 x H x W in [-1, 1] -> N x H x W x 3 uint8 RGB."""
    pixels = (images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5
    return pixels.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def from_uint8(pixels: np.ndarray) -> torch.Tensor:
    """(N x) H x W x 3 uint8 RGB -> (N x) 3 x H x W float32 in [-1, 1]: ``to_uint8``'s inverse."""
    return torch.from_numpy(np.array(pixels, np.float32)).movedim(-1, -3) / 127.5 - 1  # a copy: any array


def area_resized(images: torch.Tensor, size: int) -> torch.Tensor:
    """(..., 3, H, W) images at ``size`` x ``size``, area-averaged (the shards' crops for a smaller model)."""
    if images.shape[-1] == size:
        return images
    resized = F.interpolate(images.flatten(0, -4), size=(size, size), mode="area")
    return resized.view(*images.shape[:-2], size, size)


def grid(rows: list[torch.Tensor], columns: int = 8, gap: int = 2) -> np.ndarray:
    """One image row per tensor (its first ``columns`` images, resized to the first row's size), RGB uint8."""
    size = rows[0].shape[-1]
    count = min(columns, min(len(row) for row in rows))
    canvas = np.full((len(rows) * (size + gap) - gap, count * (size + gap) - gap, 3), 255, np.uint8)
    for r, row in enumerate(rows):
        for c, image in enumerate(to_uint8(row[:count])):
            if image.shape[0] != size:
                image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
            canvas[r * (size + gap):r * (size + gap) + size, c * (size + gap):c * (size + gap) + size] = image
    return canvas


def write_png(image: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
