// The softphone's audio graph: microphone → capture worklet (PCM16 24 kHz chunks), playback worklet → speakers.

export const RATE = 24000;

/** A failure the page explains to the user as is (`kind`: insecure, denied, no_device, busy, audio). */
export class AudioError extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind;
  }
}

function micError(err) {
  switch (err?.name) {
    case "NotAllowedError":
    case "SecurityError":
      return new AudioError("denied", "Microphone access was denied. Allow the microphone for this site in the " +
        "browser's settings, then call again.");
    case "NotFoundError":
    case "OverconstrainedError":
      return new AudioError("no_device", "No microphone was found. Plug one in, then call again.");
    case "NotReadableError":
    case "AbortError":
      return new AudioError("busy", "The microphone is in use by another application or could not be started.");
    default:
      return new AudioError("audio", `The microphone could not be opened: ${err?.message || err}`);
  }
}

async function contextWithWorklets(options) {
  const ctx = new AudioContext(options);
  await ctx.audioWorklet.addModule(new URL("./capture-worklet.js", import.meta.url));
  await ctx.audioWorklet.addModule(new URL("./playback-worklet.js", import.meta.url));
  return ctx;
}

/**
 * Open the microphone and the speakers. `onChunk(ArrayBuffer pcm16, peak)` receives each captured chunk;
 * `onPlayback(message)` the playback worklet's reports ("stats", "flushed").
 */
export async function openAudio({ onChunk, onPlayback, chunkMs = 40 }) {
  if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) {
    throw new AudioError("insecure", "The microphone is only available on HTTPS pages (or http://localhost).");
  }
  if (typeof AudioWorkletNode === "undefined") {
    throw new AudioError("audio", "This browser has no AudioWorklet support.");
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
  } catch (err) {
    throw micError(err);
  }
  let ctx;
  let source;
  try {
    // At 24 kHz the browser resamples the microphone itself; where a context cannot take a stream at another
    // rate (Firefox), fall back to the device's rate and let the worklets resample.
    try {
      ctx = await contextWithWorklets({ sampleRate: RATE, latencyHint: "interactive" });
      source = ctx.createMediaStreamSource(stream);
    } catch (err) {
      if (ctx) await ctx.close();
      ctx = await contextWithWorklets({ latencyHint: "interactive" });
      source = ctx.createMediaStreamSource(stream);
    }
  } catch (err) {
    stream.getTracks().forEach((t) => t.stop());
    if (ctx) await ctx.close().catch(() => {});
    throw new AudioError("audio", `Audio could not be started: ${err?.message || err}`);
  }
  const capture = new AudioWorkletNode(ctx, "telebridge-capture", {
    numberOfInputs: 1, numberOfOutputs: 0, channelCount: 1, channelCountMode: "explicit",
    processorOptions: { chunkMs },
  });
  capture.port.onmessage = (event) => {
    if (event.data?.type === "chunk") onChunk(event.data.pcm, event.data.peak);
  };
  source.connect(capture);
  const player = new AudioWorkletNode(ctx, "telebridge-playback", {
    numberOfInputs: 0, numberOfOutputs: 1, outputChannelCount: [1],
  });
  player.port.onmessage = (event) => onPlayback(event.data);
  player.connect(ctx.destination);
  await ctx.resume();
  return new AudioSession(ctx, stream, source, capture, player);
}

export class AudioSession {
  constructor(ctx, stream, source, capture, player) {
    Object.assign(this, { ctx, stream, source, capture, player });
    this.closed = false;
    // A microphone unplugged or revoked mid-call ends the track: let the page know.
    this.onMicEnded = null;
    for (const track of stream.getAudioTracks()) {
      track.addEventListener("ended", () => this.onMicEnded?.());
    }
  }

  get contextRate() {
    return this.ctx.sampleRate;
  }

  /** Play 24 kHz PCM16 (little-endian bytes) after what is queued. */
  playPcm16(bytes) {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const samples = new Float32Array(bytes.byteLength >> 1);
    for (let i = 0; i < samples.length; i++) samples[i] = view.getInt16(i * 2, true) / 32768;
    this.player.port.postMessage({ type: "push", samples }, [samples.buffer]);
  }

  /** Stop the agent's audio now: everything queued is dropped. */
  flush() {
    this.player.port.postMessage({ type: "flush" });
  }

  mute(muted) {
    this.capture.port.postMessage({ type: "mute", muted });
  }

  async close() {
    if (this.closed) return;
    this.closed = true;
    this.stream.getTracks().forEach((t) => t.stop());
    try {
      this.source.disconnect();
      this.player.disconnect();
    } catch (_) { /* already disconnected */ }
    await this.ctx.close().catch(() => {});
  }
}
