"""Small PCM sample-format helpers shared by the audio pipeline.

Everything inside telebridge works on float32 in [-1, 1]; int16 only appears at the edges
(G.711, WAV files, some engines).  These helpers are the one place where that convention
(scale 32768, round-half-even, clip) is written down.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = ["to_float32", "to_int16", "rms_dbfs", "SILENCE_DBFS"]

#: What :func:`rms_dbfs` reports for empty or all-zero input (instead of -inf), so callers
#: can compare and log it without special cases.
SILENCE_DBFS: float = -120.0


def to_float32(x: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """int16 → float32 (÷32768); float input passes through as float32 (no copy if already)."""
    arr = np.asarray(x)
    if arr.dtype == np.int16:
        return arr.astype(np.float32) * np.float32(1.0 / 32768.0)
    if arr.dtype.kind == "f":
        return arr.astype(np.float32, copy=False)
    if arr.dtype.kind in "iu":
        raise TypeError(f"to_float32: integer PCM must be int16, got {arr.dtype}")
    raise TypeError(f"to_float32: unsupported sample dtype {arr.dtype}")


def to_int16(x: npt.ArrayLike) -> npt.NDArray[np.int16]:
    """float → int16 (×32768, rounded half-to-even, clipped); int16 passes through.

    NaN input is not sanitised (cheaper on the per-frame path); it yields an unspecified
    value and numpy's "invalid value" RuntimeWarning.
    """
    arr = np.asarray(x)
    if arr.dtype == np.int16:
        return arr
    if arr.dtype.kind != "f":
        raise TypeError(f"to_int16: expected float or int16 samples, got {arr.dtype}")
    # Scaling by a power of two is exact in float32 too, so no float64 detour; in-place
    # minimum/maximum are cheaper than np.clip on 160-sample frames (this runs per frame).
    scaled = np.empty(arr.shape, dtype=np.float64 if arr.dtype.itemsize >= 8 else np.float32)
    np.multiply(arr, 32768.0, out=scaled, dtype=scaled.dtype)
    np.rint(scaled, out=scaled)
    np.minimum(scaled, 32767.0, out=scaled)
    np.maximum(scaled, -32768.0, out=scaled)
    return scaled.astype(np.int16)


def rms_dbfs(x: npt.ArrayLike) -> float:
    """RMS level in dBFS (full-scale sine ≈ -3 dBFS; full-scale square = 0 dBFS).

    int16 input is scaled by 1/32768 first.  Empty or silent input returns
    :data:`SILENCE_DBFS` rather than ``-inf``.
    """
    arr = np.asarray(x)
    if arr.size == 0:
        return SILENCE_DBFS
    if arr.dtype == np.int16:
        f = arr.astype(np.float64) / 32768.0
    elif arr.dtype.kind == "f":
        f = arr.astype(np.float64)
    else:
        raise TypeError(f"rms_dbfs: expected float or int16 samples, got {arr.dtype}")
    ms = float(np.mean(f * f))
    if not math.isfinite(ms):
        raise ValueError("rms_dbfs: input contains non-finite samples")
    if ms <= 0.0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 10.0 * math.log10(ms))
