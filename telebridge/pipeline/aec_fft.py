"""Real FFTs of the echo canceller into arrays it keeps (no allocation per block), without ``numpy.fft``'s per-call
overhead: its pocketfft ufuncs called directly (the very routines ``numpy.fft.rfft``/``irfft`` call, so the
results are bit-identical), or ``numpy.fft`` itself where this numpy has no such module (before 2.0).

At 8 kHz the canceller transforms a few hundred samples at a time, several times per 20 ms block and call: there
``numpy.fft``'s argument checking costs as much as the transform.
"""

from __future__ import annotations

import numpy as np

try:  # numpy >= 2.0
    from numpy.fft import _pocketfft_umath as _pfu
except ImportError:  # pragma: no cover - older numpy: the public functions
    _pfu = None


def _private_routines_work() -> bool:
    """The private routines are no API: check once that this numpy's still take these arguments and agree."""
    x = np.arange(12.0).reshape(2, 6)
    try:
        spec = _pfu.rfft_n_even(x, 1.0, out=np.zeros((2, 4), np.complex128))
        back = _pfu.irfft(spec, 1.0 / 6, out=np.zeros((2, 6)))
    except Exception:  # noqa: BLE001 - any change of signature: use numpy.fft
        return False
    return bool(np.array_equal(spec, np.fft.rfft(x)) and np.array_equal(back, np.fft.irfft(np.fft.rfft(x), 6)))


if _pfu is not None and not _private_routines_work():  # pragma: no cover - a numpy that changed them
    _pfu = None

__all__ = ["irfft_into", "rfft_into"]


def rfft_into(x: np.ndarray, n: int, out: np.ndarray) -> np.ndarray:
    """``out[...] = numpy.fft.rfft(x, n)`` along the last axis (``x`` zero-padded to ``n``)."""
    if _pfu is None:
        out[...] = np.fft.rfft(x, n)
        return out
    return (_pfu.rfft_n_odd if n % 2 else _pfu.rfft_n_even)(x, 1.0, out=out)


def irfft_into(spec: np.ndarray, n: int, out: np.ndarray) -> np.ndarray:
    """``out[...] = numpy.fft.irfft(spec, n)`` along the last axis."""
    if _pfu is None:
        out[...] = np.fft.irfft(spec, n)
        return out
    return _pfu.irfft(spec, 1.0 / n, out=out)
