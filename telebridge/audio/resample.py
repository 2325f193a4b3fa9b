"""Stateful polyphase sample-rate conversion for streaming call audio.

Every call converts audio continuously: 8 kHz phone audio up to 16 kHz for VAD/STT and TTS
output (16/22.05/24 kHz) down to 8 kHz for the phone.  Audio arrives in 20 ms chunks, so
the converter must be *stateful* — the output of any split of a signal into chunks is the
same as converting the whole signal at once, which is what keeps chunk edges click-free —
and cheap, because it runs for every frame of every concurrent call.

Design:

* Rational ratio ``L/M = out/in`` reduced by the gcd; one linear-phase Kaiser-windowed FIR
  designed at ``L * in_rate`` (``scipy.signal.firwin``), split into ``L`` polyphase rows.
  Filters are designed once per ``(in, out, quality)`` and shared by every resampler.
* Output ``n`` needs filter row ``(n*M) % L`` and the input window ending at sample
  ``(n*M) // L``; that mapping repeats every ``L`` outputs, so it is tabulated once.
  Two kernels use the table:
  - small ``L*M`` (8k→16k, 16k→8k, 24k→8k, 48k→8k, 16k↔24k, ...): for each output phase,
    ``M`` strided ``np.correlate`` calls over the new input — exactly ``K`` multiply-adds
    per output and no per-chunk copies (the hot 8k→16k path is two correlations);
  - large ``L`` (22.05k→8k is 160/441, 44.1k→8k is 80/441): a dense ``(L, ~M+K)`` matrix
    per cycle, so a 20 ms chunk is one BLAS matrix-vector product.  It does ~3x the
    necessary multiply-adds, yet beats gathering 160 windows by a wide margin.
  All arithmetic is float64 (output float32), so results are identical however the
  input is chunked.
* The filter is zero-padded in front so that its group delay is a whole number of output
  samples; :attr:`Resampler.delay` reports it and :func:`resample_once` removes it.

The default filter keeps 0–0.425·f_min flat (3.4 kHz at 8 kHz: the whole telephone band,
within ~0.001 dB), has its −6 dB point at 0.4625·f_min and rejects everything from the lower
rate's Nyquist frequency up by ≥ 80 dB, so no aliasing lands anywhere in the output band.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "Quality",
    "FilterSpec",
    "PolyphaseFilter",
    "QUALITY_SPECS",
    "design_filter",
    "Resampler",
    "resample_once",
]

Quality = Literal["fast", "default", "high"]


@dataclass(frozen=True)
class FilterSpec:
    """Anti-aliasing/anti-imaging filter requirements, relative to the lower rate.

    ``passband`` and ``stopband`` are edge frequencies as fractions of ``min(in, out)``
    (0.5 = that rate's Nyquist frequency); ``atten_db`` is the Kaiser design attenuation.
    """

    passband: float
    stopband: float
    atten_db: float


QUALITY_SPECS: Final[dict[str, FilterSpec]] = {
    # Transition band may alias into 0.45–0.5·f_min (3.6–4 kHz at 8 kHz): above the
    # telephone band, so inaudible on a call, for about half the taps of "default".
    "fast": FilterSpec(passband=0.425, stopband=0.55, atten_db=70.0),
    "default": FilterSpec(passband=0.425, stopband=0.5, atten_db=80.0),
    # Flat to 0.45·f_min, 100 dB: about twice the taps of "default"; for offline use.
    "high": FilterSpec(passband=0.45, stopband=0.5, atten_db=100.0),
}

# Kernel choice: with few (L, M) combinations the work is split per output phase and input
# sub-phase into L*M plain correlations; otherwise one dense matrix-vector product per
# L-output cycle.  Thresholds keep the per-call Python overhead and the dense table small.
_MAX_CORRELATE_PAIRS: Final = 64
_MAX_DENSE_ENTRIES: Final = 1 << 23  # 64 MiB of float64
_MAX_CYCLES_PER_MATMUL: Final = 64  # bounds the temporary copy for whole-file inputs


@dataclass(frozen=True, eq=False)
class PolyphaseFilter:
    """An FIR prototype, split for fast polyphase evaluation.

    Output ``n`` (``n = c*L + r``) is ``bank[phase[r]] @ x[start : start + K]`` with
    ``start = c*M + offsets[r] - (K - 1)``: the filter row and the input offset only depend
    on ``r``, so they are tabulated once per cycle of ``L`` outputs.

    * ``subtaps[r][s]`` (small ``L*M``): row ``phase[r]`` decimated by ``M`` starting at tap
      ``s``, so class ``r``'s outputs are a sum of ``M`` correlations over ``x[s::M]``.
    * ``dense`` (otherwise): an ``(L, offsets[-1] + K)`` matrix whose row ``r`` holds row
      ``phase[r]`` at column ``offsets[r]``; one cycle is ``dense @ x[cycle span]``.
    """

    in_rate: int
    out_rate: int
    up: int
    down: int
    taps: int
    delay: int
    prototype: npt.NDArray[np.float64]
    bank: npt.NDArray[np.float64]
    offsets: npt.NDArray[np.int64]
    subtaps: tuple[tuple[npt.NDArray[np.float64], ...], ...] | None
    dense: npt.NDArray[np.float64] | None


def _check_rate(name: str, rate: int) -> int:
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise ValueError(f"{name} must be a positive integer sample rate, got {rate!r}")
    return int(rate)


def _frozen(a: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


def design_filter(in_rate: int, out_rate: int, quality: Quality = "default") -> PolyphaseFilter:
    """The polyphase filter for ``in_rate → out_rate``, designed once per process and shared."""
    if quality not in QUALITY_SPECS:
        raise ValueError(f"unknown quality {quality!r}; use one of {sorted(QUALITY_SPECS)}")
    return _design(_check_rate("in_rate", in_rate), _check_rate("out_rate", out_rate), quality)


@functools.lru_cache(maxsize=64)
def _design(in_rate: int, out_rate: int, quality: str) -> PolyphaseFilter:
    # Imported here: scipy.signal costs ~1.5 s to import on the target box, and code that
    # only needs G.711 or WAV I/O from telebridge.audio should not pay for it.
    from scipy import signal

    spec = QUALITY_SPECS[quality]
    g = math.gcd(in_rate, out_rate)
    up, down = out_rate // g, in_rate // g
    if up == down:
        one = _frozen(np.ones(1))
        zero = np.zeros(1, dtype=np.int64)
        return PolyphaseFilter(in_rate, out_rate, 1, 1, 1, 0, one, one.reshape(1, 1), zero, None, None)

    fs = float(in_rate * up)  # rate of the (virtual) zero-stuffed signal
    f_min = float(min(in_rate, out_rate))
    f_pass, f_stop = spec.passband * f_min, spec.stopband * f_min
    numtaps, beta = signal.kaiserord(spec.atten_db, (f_stop - f_pass) / (fs / 2.0))
    numtaps |= 1  # odd length: type-I linear phase, integer group delay
    h = signal.firwin(numtaps, (f_pass + f_stop) / 2.0, window=("kaiser", beta), fs=fs)
    h *= up  # zero-stuffing divides the signal's gain by L

    # Front-pad so the group delay is a whole number of output samples, back-pad to a
    # multiple of L so the taps split evenly into L phases.
    half = (numtaps - 1) // 2
    pre = (-half) % down
    taps = -(-(numtaps + pre) // up)
    proto = np.zeros(taps * up)
    proto[pre : pre + numtaps] = h
    delay = (half + pre) // down
    # bank[p, K-1-q] = h[p + q*L]: phase p, reversed so it dots with a chronological window.
    bank = _frozen(proto.reshape(taps, up).T[:, ::-1])

    r = np.arange(up, dtype=np.int64) * down
    phase, offsets = r % up, r // up
    offsets.setflags(write=False)
    subtaps = None
    dense = None
    if up * down <= _MAX_CORRELATE_PAIRS:
        subtaps = tuple(
            tuple(_frozen(bank[p][s::down]) for s in range(min(down, taps))) for p in phase
        )
    else:
        # Row L-1 ends at column offsets[-1] + K - 1: nothing later than that input sample
        # is read, so a full cycle is computable as soon as its last output is due.
        width = int(offsets[-1]) + taps
        if up * width > _MAX_DENSE_ENTRIES:
            raise ValueError(
                f"{in_rate}->{out_rate} Hz reduces to {up}/{down}: too complex a ratio for "
                "a streaming polyphase filter"
            )
        d = np.zeros((up, width))
        for i in range(up):
            d[i, offsets[i] : offsets[i] + taps] = bank[phase[i]]
        dense = _frozen(d)
    return PolyphaseFilter(
        in_rate, out_rate, up, down, taps, delay, _frozen(proto), bank, offsets, subtaps, dense
    )


def _as_float_mono(x: npt.ArrayLike) -> npt.NDArray[np.floating]:
    """Validate a chunk: 1-D float (kept as is) or int16 (scaled to float64 by 1/32768)."""
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"resampler input must be 1-D (mono), got shape {arr.shape}")
    if arr.dtype == np.int16:
        return arr.astype(np.float64) * (1.0 / 32768.0)
    if arr.dtype.kind == "f":
        return arr
    raise TypeError(f"resampler input must be float or int16, got {arr.dtype}")


class Resampler:
    """Streaming rational resampler; one instance per audio stream (not thread-safe).

    ``process`` accepts any chunk size (including 0) as float32/float64 in [-1, 1] or int16
    and returns float32.  After ``N`` input samples in total, exactly ``ceil(N*L/M)`` output
    samples have been returned, and the concatenated output does not depend on how the
    input was split.  Output lags the input by :attr:`delay` output samples (the FIR's
    group delay); :meth:`flush` emits that tail at end of stream.
    """

    __slots__ = ("_f", "_buf", "_buf_start", "_n_in", "_n_out", "_identity")

    def __init__(self, in_rate: int, out_rate: int, *, quality: Quality = "default") -> None:
        self._f = design_filter(in_rate, out_rate, quality)
        self._identity = self._f.up == self._f.down
        self.reset()

    @property
    def in_rate(self) -> int:
        return self._f.in_rate

    @property
    def out_rate(self) -> int:
        return self._f.out_rate

    @property
    def ratio(self) -> tuple[int, int]:
        """``(L, M)``: up-sampling and down-sampling factors after gcd reduction."""
        return self._f.up, self._f.down

    @property
    def delay(self) -> int:
        """Group delay in output samples (0 for the identity path)."""
        return self._f.delay

    @property
    def filter(self) -> PolyphaseFilter:
        """The shared filter design (read-only arrays)."""
        return self._f

    def reset(self) -> None:
        """Forget all history, as if freshly constructed (e.g. at a barge-in)."""
        history = self._f.taps - 1
        self._buf: npt.NDArray[np.float64] = np.zeros(history)
        self._buf_start = -history  # absolute input index of _buf[0]
        self._n_in = 0
        self._n_out = 0

    def process(self, x: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """Convert the next chunk; returns every output sample that is now computable."""
        new = _as_float_mono(x)
        if self._identity:
            self._n_in += new.shape[0]
            self._n_out = self._n_in
            return new.astype(np.float32)  # always a copy: callers may mutate the result
        if new.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
        f = self._f
        buf = np.concatenate((self._buf, new), dtype=np.float64)
        self._n_in += new.shape[0]
        n_end = -(-(self._n_in * f.up) // f.down)  # ceil(n_in * L / M)
        if n_end > self._n_out:
            if f.subtaps is not None:
                out = self._correlate(buf, n_end)
            else:
                out = self._dense(buf, n_end)
        else:
            out = np.zeros(0, dtype=np.float32)
        self._n_out = n_end
        # Keep only what the next output's window can still reach.
        next_first = (n_end * f.down) // f.up - (f.taps - 1)
        drop = min(max(next_first - self._buf_start, 0), buf.shape[0])
        self._buf = buf[drop:].copy()
        self._buf_start += drop
        return out

    def flush(self) -> npt.NDArray[np.float32]:
        """End of stream: emit the last :attr:`delay` samples' worth of output, then reset.

        ``process(x) + flush()`` has ``ceil(N*L/M) + delay`` samples; dropping the first
        ``delay`` aligns it with the input (that is :func:`resample_once`).
        """
        if self._identity:
            self.reset()
            return np.zeros(0, dtype=np.float32)
        f = self._f
        target = -(-(self._n_in * f.up) // f.down) + f.delay
        need_in = -(-(target * f.down) // f.up)
        before = self._n_out
        tail = self.process(np.zeros(need_in - self._n_in))[: max(target - before, 0)]
        self.reset()
        return tail

    # -- kernels ---------------------------------------------------------------------------

    def _correlate(self, buf: npt.NDArray[np.float64], n_end: int) -> npt.NDArray[np.float32]:
        """Small L*M: per output class r, sum M strided correlations (K total taps)."""
        f = self._f
        up, down, k = f.up, f.down, f.taps
        assert f.subtaps is not None
        n0 = self._n_out
        out = np.empty(n_end - n0, dtype=np.float32)
        for r in range(up):
            c_lo = -(-(n0 - r) // up)  # first cycle whose class-r output is still due
            count = -(-(n_end - r) // up) - c_lo
            if count <= 0:
                continue
            start = c_lo * down + int(f.offsets[r]) - (k - 1) - self._buf_start
            acc: npt.NDArray[np.float64] | None = None
            for s, taps in enumerate(f.subtaps[r]):
                seq = buf[start + s :: down][: count + taps.shape[0] - 1]
                part = np.correlate(seq, taps, "valid")
                acc = part if acc is None else acc + part
            first = c_lo * up + r - n0
            out[first :: up] = acc
        return out

    def _dense(self, buf: npt.NDArray[np.float64], n_end: int) -> npt.NDArray[np.float32]:
        """Large L: one matrix-vector product per L-output cycle (partial cycles sliced)."""
        f = self._f
        assert f.dense is not None
        up, down, k = f.up, f.down, f.taps
        width = f.dense.shape[1]
        out = np.empty(n_end - self._n_out, dtype=np.float32)
        n = self._n_out
        pos = 0
        while n < n_end:
            cycle, r0 = divmod(n, up)
            col0 = cycle * down - (k - 1) - self._buf_start  # buf index of dense column 0
            if r0 == 0 and n_end - n >= up:
                cycles = min((n_end - n) // up, _MAX_CYCLES_PER_MATMUL)
                if cycles == 1:
                    y = f.dense @ buf[col0 : col0 + width]
                else:
                    spans = sliding_window_view(buf[col0:], width)[::down][:cycles]
                    y = (spans @ f.dense.T).reshape(-1)
            else:
                r1 = min(up, r0 + (n_end - n))
                lo, hi = int(f.offsets[r0]), int(f.offsets[r1 - 1]) + k
                y = f.dense[r0:r1, lo:hi] @ buf[col0 + lo : col0 + hi]
            out[pos : pos + y.shape[0]] = y
            pos += y.shape[0]
            n += y.shape[0]
        return out


def resample_once(
    x: npt.ArrayLike, in_rate: int, out_rate: int, *, quality: Quality = "default"
) -> npt.NDArray[np.float32]:
    """Resample a whole signal with the streaming filter, delay removed.

    Returns ``ceil(len(x) * out_rate / in_rate)`` float32 samples (reduced ratio), aligned
    with the input like ``scipy.signal.resample_poly``.
    """
    r = Resampler(in_rate, out_rate, quality=quality)
    head = r.process(x)
    tail = r.flush()
    return np.concatenate((head, tail))[r.delay :]
