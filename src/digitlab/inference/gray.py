"""Any user image to float gray in [0, 1]: every Pillow mode, transparency composited.

Step 1 of ``digitlab.inference.preprocess``: a browser canvas is transparent where nothing was
drawn, a scan may be 16-bit, a photo CMYK; the steps after this one see one float array.
"""

from __future__ import annotations

import numpy as np
from PIL import Image


def _alpha_composite(img: Image.Image) -> np.ndarray:
    """Gray from an image with transparency, on a backdrop that contrasts with the drawing.

    A browser canvas exported as PNG is transparent where nothing was drawn; the strokes
    may be black or white. Mostly transparent: the opaque pixels are the drawing, so they
    go on the opposite backdrop. Mostly opaque: a normal picture, composited on white.
    """
    rgba = img if img.mode == "RGBA" else img.convert("RGBA")
    lum = np.asarray(rgba.convert("L"), dtype=np.float32) / 255.0
    alpha = rgba.getchannel("A")
    low = alpha.getextrema()[0]  # (min, max) of the one channel
    if float(low) / 255.0 >= 0.99:  # type: ignore[arg-type]  # opaque (a browser canvas): nothing to composite
        return lum
    a = np.asarray(alpha, dtype=np.float32) / 255.0
    opaque = a > 0.5
    backdrop = 1.0
    if opaque.mean() < 0.5 and opaque.any() and float(lum[opaque].mean()) > 0.5:
        backdrop = 0.0  # light strokes on a transparent canvas
    return lum * a + backdrop * (1.0 - a)


def to_grayscale(img: Image.Image) -> np.ndarray:
    """Any Pillow mode to float32 gray (H, W) in [0, 1].

    Handles 1/L/P/RGB/CMYK/YCbCr, transparency (RGBA, LA, PA, palette with a transparent
    colour), 16-bit and 32-bit integer and float images.
    """
    mode = img.mode
    if mode.startswith("I;16"):
        return np.asarray(img, dtype=np.float32) / 65535.0
    if mode in ("I", "F"):
        arr = np.asarray(img, dtype=np.float32)
        top = float(arr.max()) if arr.size else 0.0
        if mode == "F" and top <= 1.0:
            return np.clip(arr, 0.0, 1.0)
        scale = 255.0 if top <= 255 else 65535.0 if top <= 65535 else top
        return np.clip(arr / scale, 0.0, 1.0)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
        return _alpha_composite(img)
    if mode not in ("1", "L", "P", "RGB", "CMYK", "YCbCr", "RGBX"):
        img = img.convert("RGB")  # LAB, HSV and other rare modes
    return np.asarray(img.convert("L"), dtype=np.float32) / 255.0
