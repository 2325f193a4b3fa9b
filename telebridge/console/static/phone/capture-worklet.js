// Microphone → PCM16 at 24 kHz, little-endian, in fixed chunks (40 ms by default) posted to the page.
//
// Runs on the audio rendering thread. Input arrives in 128-frame quanta at the AudioContext's rate
// (`sampleRate`, a global of AudioWorkletGlobalScope); it is resampled to 24 kHz unless the context already runs
// at 24 kHz. While muted the stream goes on with silence: the realtime API expects audio continuously.

import { StreamResampler } from "./resampler.js";

const TARGET_RATE = 24000;

class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const chunkMs = options?.processorOptions?.chunkMs ?? 40;
    this.chunkSamples = Math.round((TARGET_RATE * chunkMs) / 1000);
    this.resampler = new StreamResampler(sampleRate, TARGET_RATE);
    this.muted = false;
    this.peak = 0;
    this.newChunk();
    this.port.onmessage = (event) => {
      if (event.data?.type === "mute") this.muted = Boolean(event.data.muted);
    };
  }

  newChunk() {
    this.buffer = new ArrayBuffer(this.chunkSamples * 2);
    this.view = new DataView(this.buffer);
    this.fill = 0;
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || channels.length === 0) return true; // not connected (yet): nothing to capture
    const samples = this.resampler.process(channels[0]);
    for (let i = 0; i < samples.length; i++) {
      let s = this.muted ? 0 : samples[i];
      s = s > 1 ? 1 : s < -1 ? -1 : s;
      const magnitude = s < 0 ? -s : s;
      if (magnitude > this.peak) this.peak = magnitude;
      this.view.setInt16(this.fill * 2, Math.round(s * 32767), true);
      this.fill += 1;
      if (this.fill === this.chunkSamples) {
        this.port.postMessage({ type: "chunk", pcm: this.buffer, peak: this.peak }, [this.buffer]);
        this.peak = 0;
        this.newChunk();
      }
    }
    return true;
  }
}

registerProcessor("telebridge-capture", CaptureProcessor);
