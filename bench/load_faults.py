"""``bench/load.py --fault ...``: what N concurrent conversations go through when something dies mid-call.

* ``provider-down``: the Deepgram fakes process is SIGKILLed mid-window (STT and TTS sockets reset, new
  connections refused): a provider outage. A second fakes process is the agent's fallback
  (``BENCH_BACKUP_ORIGIN``, ``bench/agents/conversation.py``). Expected: no call dropped; every call's next
  sentence is preceded by the apology (``provider_failure_message``) in the backup's voice, once per call; the
  questions asked after the outage are answered (the one being transcribed at the moment may be transcribed whole
  by the backup).
* ``instance-kill``: two servers (one worker each) on one Redis, half the calls on each; server A is SIGKILLed
  mid-window. Expected: A's calls drop (its process is gone), B's calls go on untouched: none dropped, every
  question answered, B's frame lag and agent audio as before the kill.

Each prints the windows before and after the fault with ``bench/load.py``'s columns, and a verdict.
"""

from __future__ import annotations

import contextlib
import secrets
import signal
import time
from pathlib import Path
from typing import Any

from bench.cloud_fakes import fakes_process
from bench.cpu_per_call import free_port
from bench.load import (
    HEAD, Generators, Step, _log_errors, _row, measure_step, redis_process, server_process,
)
from bench.load_caller import QUESTION, CallerConfig
from bench.load_probe import get_json, wait_no_calls

APOLOGY = "Sorry, one moment."


def _print_rows(steps: list[Step]) -> None:
    print(HEAD)
    print("-" * len(HEAD))
    for s in steps:
        print(_row(s))


def provider_down(n: int, *, window: float, ramp: float, gens_count: int, workdir: Path,
                  extra_env: dict[str, str]) -> bool:
    token = secrets.token_hex(16)
    key = "dg-bench-" + secrets.token_hex(12)
    with contextlib.ExitStack() as stack:
        primary = stack.enter_context(fakes_process(free_port(), workdir / "fakes-primary.log", transcript=QUESTION,
                                                    key=key))
        backup = stack.enter_context(fakes_process(free_port(), workdir / "fakes-backup.log", transcript=QUESTION,
                                                   key=key))
        env = {**primary.server_env, "BENCH_BACKUP_ORIGIN": backup.origin, **extra_env}
        server = stack.enter_context(server_process(token, workdir / "server-fault.log", env=env))
        gens = Generators(CallerConfig(urls=[server.url], token=token), gens_count, workdir)
        stack.callback(gens.close)
        before = Step("pre", n)
        before.setup_failures = gens.open(n)
        print(f"  provider-down: {n} calls up; measuring before the outage ...", flush=True)
        time.sleep(ramp)
        measure_step(before, server, gens, window=window / 2, other_pids=[primary.proc.pid, backup.proc.pid])
        print(f"  killing the primary Deepgram fakes (pid {primary.proc.pid}) ...", flush=True)
        primary.proc.send_signal(signal.SIGKILL)
        primary.proc.wait()
        outage = Step("out", n)  # the window right after: replies in flight fail over
        measure_step(outage, server, gens, window=window / 2, other_pids=[backup.proc.pid])
        after = Step("post", n)
        measure_step(after, server, gens, window=window / 2, other_pids=[backup.proc.pid])
        health = get_json(server.port, "/v1/health")
        done = gens.hangup()
        lingering = wait_no_calls(server.port, 20)
        b = backup.stats()
    errors = _log_errors(workdir / "server-fault.log")
    apologies = b.get("said", {}).get(APOLOGY, 0)
    providers = health.get("providers", {})
    steps = [before, outage, after]
    print()
    print(f"Fault: the STT/TTS provider goes down mid-call, {n} concurrent calls (pre = before the outage, out = the "
          f"{window / 2:.0f} s after it, post = the next {window / 2:.0f} s)")
    _print_rows(steps)
    print(f"backup provider: {b.get('listen_sockets', 0)} listen + {b.get('speak_sockets', 0)} speak sockets, "
          f"{b.get('prerecorded', 0)} whole-utterance transcriptions, {b.get('flushes', 0)} sentences, "
          f"apology said {apologies} time(s) for {n} calls")
    print(f"server's provider health: " + ", ".join(
        f"{k}: {v.get('fallbacks', 0)} fallbacks, errors {v.get('errors_by_kind', {})}" for k, v in providers.items()))
    print(f"all calls: {done.answered}/{done.questions} questions answered, {done.closed_by_server} dropped, "
          f"{lingering} still live after hang-up")
    for e in errors[:5]:
        print(f"  server log: {e}")
    dropped = done.closed_by_server + sum(s.stats.calls - s.stats.streaming for s in steps if s.stats)
    post_ok = after.stats is not None and after.stats.unanswered == 0 and after.stats.questions > 0
    ok = dropped == 0 and apologies == n and post_ok and not lingering
    print(("PASS" if ok else "FAIL") + f": {dropped} calls dropped (want 0), apologies {apologies}/{n} (want one per "
          f"call), after the outage {after.stats.answered if after.stats else 0}/"
          f"{after.stats.questions if after.stats else 0} answered (want all)")
    return ok


def instance_kill(n: int, *, window: float, ramp: float, gens_count: int, workdir: Path,
                  extra_env: dict[str, str]) -> bool:
    token = secrets.token_hex(16)
    half = max(1, n // 2)
    with contextlib.ExitStack() as stack:
        fakes = stack.enter_context(fakes_process(free_port(), workdir / "fakes-kill.log", transcript=QUESTION))
        redis_url, _ = stack.enter_context(redis_process(workdir))
        env = {**fakes.server_env, "REDIS_URL": redis_url, **extra_env}
        a = stack.enter_context(server_process(token, workdir / "server-a.log",
                                               env={**env, "TELEBRIDGE_INSTANCE_ID": "a"}))
        b = stack.enter_context(server_process(token, workdir / "server-b.log",
                                               env={**env, "TELEBRIDGE_INSTANCE_ID": "b"}))
        gens_a = Generators(CallerConfig(urls=[a.url], token=token, seed=11), 1, workdir)
        stack.callback(gens_a.close)
        gens_b = Generators(CallerConfig(urls=[b.url], token=token, seed=22), max(1, gens_count - 1), workdir)
        stack.callback(gens_b.close)
        before = Step("B pre", half)
        gens_a.open(half)
        before.setup_failures = gens_b.open(half)
        print(f"  instance-kill: {half} calls on each of two servers (pids {a.pid}, {b.pid}); measuring ...", flush=True)
        time.sleep(ramp)
        measure_step(before, b, gens_b, window=window / 2, other_pids=[fakes.proc.pid])

        def kill_a(seconds: float) -> None:
            time.sleep(min(2.0, seconds / 4))
            a.proc.send_signal(signal.SIGKILL)
            a.proc.wait()
            time.sleep(max(0.0, seconds - min(2.0, seconds / 4)))

        print(f"  SIGKILL to server A (pid {a.pid}) mid-window ...", flush=True)
        during = Step("B kill", half)
        measure_step(during, b, gens_b, window=window / 2, other_pids=[fakes.proc.pid], during=kill_a)
        after = Step("B post", half)
        measure_step(after, b, gens_b, window=window / 2, other_pids=[fakes.proc.pid])
        lost_a = gens_a.hangup()
        done_b = gens_b.hangup()
        lingering = wait_no_calls(b.port, 20)
    errors = _log_errors(workdir / "server-b.log")
    steps = [before, during, after]
    print()
    print(f"Fault: one of two instances (one Redis) killed mid-call; {half} calls on each; rows = instance B's calls "
          f"before, across and after the kill")
    _print_rows(steps)
    print(f"instance A (killed): {lost_a.closed_by_server}/{lost_a.calls} of its calls dropped, as expected")
    print(f"instance B: {done_b.answered}/{done_b.questions} questions answered, {done_b.closed_by_server} calls "
          f"dropped, {lingering} still live after hang-up")
    for e in errors[:5]:
        print(f"  server B log: {e}")
    unanswered = sum(s.stats.unanswered for s in steps if s.stats)
    ok = done_b.closed_by_server == 0 and unanswered == 0 and not lingering and not [
        e for e in errors if not e.startswith("VAD backlog")]
    print(("PASS" if ok else "FAIL") + f": instance B dropped {done_b.closed_by_server} calls (want 0), "
          f"{unanswered} questions unanswered across the kill (want 0)")
    return ok


def run_fault(kind: str, n: int, **kw: Any) -> bool:
    return (provider_down if kind == "provider-down" else instance_kill)(n, **kw)
