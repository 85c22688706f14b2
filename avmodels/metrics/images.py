"""Image and clip measures as ATVGnet's evaluation computes them, and CPBD sharpness from its paper.

Arrays are uint8 RGB, one image (H x W x 3) or many (... x H x W x 3); a measure of many is the mean of the
per-image values, as the official evaluation averages over frames.
"""
from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage
from skimage.feature import canny
from skimage.metrics import structural_similarity

SSIM_SIZE = 256  # ATVGnet resizes both frames to 256 x 256 (INTER_AREA) before SSIM


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB, peak 255, averaged over images (inf where two images are equal): the
    papers' measure, on the colour images as they are."""
    a, b = rgb_images(a), rgb_images(b)
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).reshape(len(a), -1).mean(axis=1)
    with np.errstate(divide="ignore"):
        return float(np.mean(10 * np.log10(255.0**2 / mse)))


def psnr_release(a: np.ndarray, b: np.ndarray) -> float:
    """ATVGnet's released ``psnr_f`` as its ``compare_ssim`` calls it (``evaluation_matrix.py``): both images
    resized to 256 x 256 (INTER_AREA), made grey, and the error squared in uint8, so the difference and its square
    wrap modulo 256 (100 where equal); the number its published PSNR follows, not a true PSNR."""
    values = []
    for x, y in zip(rgb_images(a), rgb_images(b)):
        x, y = (cv2.cvtColor(_resized(image, SSIM_SIZE), cv2.COLOR_RGB2GRAY) for image in (x, y))
        mse = np.mean((x - y) ** 2)  # uint8 arithmetic, as the release
        values.append(100.0 if mse == 0 else 20 * np.log10(255.0 / np.sqrt(mse)))
    return float(np.mean(values))


def ssim(a: np.ndarray, b: np.ndarray, *, size: int | None = SSIM_SIZE) -> float:
    """Structural similarity averaged over images: scikit-image's SSIM on the colour images (channel_axis=-1:
    the mean of the per-channel SSIMs; 7 x 7 uniform window, data range 255), each image first resized to
    ``size`` x ``size`` with INTER_AREA as ATVGnet's evaluation does (None: as they are)."""
    a, b = rgb_images(a), rgb_images(b)
    values = [structural_similarity(_resized(x, size), _resized(y, size), channel_axis=-1, data_range=255)
              for x, y in zip(a, b)]
    return float(np.mean(values))


def cpbd(image: np.ndarray, *, block: int = 64, edge_share: float = 0.002, beta: float = 3.6,
         p_jnb: float = 0.63) -> float:
    """Cumulative probability of blur detection (Narvekar & Karam, IEEE TIP 2011): higher is sharper, in [0, 1].

    On the grey image: blocks of ``block`` x ``block`` pixels with more than ``edge_share`` of their pixels on
    Canny edges are edge blocks. In them, each vertical edge pixel (Sobel across the row above 4 x its mean
    square, thinned to the row's maxima) has a width (Marziliano et al.: from the intensity extremum before the
    edge to the one after it, along the row) and a just-noticeable-blur width of 5 pixels in blocks of contrast
    <= 50, else 3. Its probability of being seen as blurred is 1 - exp(-|width / jnb_width| ** beta); CPBD is the
    share of those edge pixels whose probability is at most ``p_jnb`` (blur is noticed with 63% probability at
    the JNB width). NaN for an image with no edge block.
    """
    grey = _grey(image).astype(np.float64)
    blocks_on_edges = canny(grey / 255.0)
    across = ndimage.sobel(grey, axis=1)
    strength = across**2
    thinned = (strength >= np.roll(strength, 1, axis=1)) & (strength >= np.roll(strength, -1, axis=1))
    vertical = (strength > 4 * strength.mean()) & thinned
    vertical[:, [0, -1]] = False
    widths = _marziliano_widths(grey, vertical, np.sign(across))
    probabilities = []
    height, width = grey.shape
    for top in range(0, height - block + 1, block):
        for left in range(0, width - block + 1, block):
            window = (slice(top, top + block), slice(left, left + block))
            if blocks_on_edges[window].sum() <= edge_share * block * block:
                continue
            block_widths = widths[window][vertical[window]]
            jnb = 5.0 if grey[window].max() - grey[window].min() <= 50 else 3.0
            probabilities.append(1 - np.exp(-np.abs(block_widths / jnb) ** beta))
    probabilities = np.concatenate(probabilities) if probabilities else np.zeros(0)
    return float(np.mean(probabilities <= p_jnb)) if len(probabilities) else float("nan")


def _marziliano_widths(grey: np.ndarray, edges: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Width of each marked edge along its row: from the extremum before the edge to the extremum after it,
    following the rise (or fall) the gradient's sign says the edge has."""
    widths = np.zeros(grey.shape)
    for row, column in zip(*np.nonzero(edges)):
        line = grey[row]
        step = 1.0 if direction[row, column] >= 0 else -1.0  # rising or falling along the row
        left = column
        while left > 0 and step * (line[left] - line[left - 1]) > 0:
            left -= 1
        right = column
        while right < len(line) - 1 and step * (line[right + 1] - line[right]) > 0:
            right += 1
        widths[row, column] = right - left
    return widths


def rgb_images(x: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 from one image (H x W x 3, a batch of one) or many (... x H x W x 3); anything else is
    refused with one line, so no measure returns NaN for a wrong shape."""
    x = np.asarray(x)
    if x.dtype != np.uint8 or x.ndim < 3 or x.shape[-1] != 3:
        raise ValueError(f"expected uint8 RGB images (H x W x 3, or ... x H x W x 3), got {x.dtype} {x.shape}")
    return x.reshape(-1, *x.shape[-3:])


def _resized(image: np.ndarray, size: int | None) -> np.ndarray:
    if size is None or image.shape[:2] == (size, size):
        return image
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


def _grey(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return image
