// The agent's audio: a queue of 24 kHz samples played in order, flushed at once on request.
//
// Messages from the page:
//   {type: "push", samples: Float32Array}  24 kHz audio to play after what is queued
//   {type: "flush"}                        drop everything queued; the output is silent from the next quantum
// Messages to the page:
//   {type: "stats", playedSeconds, queuedSeconds, playing}   a few times a second while anything changes
//   {type: "flushed", droppedSeconds, playedSeconds}         answer to "flush"
//   {type: "resumed", playedSinceFlushSeconds}               the first push after a flush: how much was played
//                                                            in between (0 unless audio leaked past the flush)

import { StreamResampler } from "./resampler.js";

const SOURCE_RATE = 24000;
const STATS_EVERY = 8; // render quanta (~21 ms at 48 kHz, ~43 ms at 24 kHz)

class PlaybackProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    this.resampler = new StreamResampler(SOURCE_RATE, sampleRate);
    this.queue = []; // Float32Arrays at the context's rate
    this.offset = 0; // read position in queue[0]
    this.queued = 0; // samples waiting, at the context's rate
    this.played = 0; // samples played since the start, at the context's rate
    this.quanta = 0;
    this.wasPlaying = false;
    this.sinceFlush = null; // samples played since the last flush, until the next push
    this.port.onmessage = (event) => this.onMessage(event.data);
  }

  onMessage(message) {
    if (message?.type === "push") {
      if (this.sinceFlush !== null) {
        this.port.postMessage({ type: "resumed", playedSinceFlushSeconds: this.sinceFlush / sampleRate });
        this.sinceFlush = null;
      }
      const samples = this.resampler.process(message.samples);
      if (samples.length) {
        this.queue.push(samples);
        this.queued += samples.length;
      }
    } else if (message?.type === "flush") {
      const dropped = this.queued;
      this.queue = [];
      this.offset = 0;
      this.queued = 0;
      this.resampler.reset();
      this.sinceFlush = 0;
      this.port.postMessage({
        type: "flushed", droppedSeconds: dropped / sampleRate, playedSeconds: this.played / sampleRate,
      });
      this.sendStats(false);
    }
  }

  sendStats(playing) {
    this.wasPlaying = playing;
    this.port.postMessage({
      type: "stats", playedSeconds: this.played / sampleRate, queuedSeconds: this.queued / sampleRate, playing,
    });
  }

  process(inputs, outputs) {
    const out = outputs[0][0];
    let written = 0;
    while (written < out.length && this.queue.length) {
      const head = this.queue[0];
      const take = Math.min(out.length - written, head.length - this.offset);
      out.set(head.subarray(this.offset, this.offset + take), written);
      written += take;
      this.offset += take;
      if (this.offset >= head.length) {
        this.queue.shift();
        this.offset = 0;
      }
    }
    out.fill(0, written);
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    this.queued -= written;
    this.played += written;
    if (this.sinceFlush !== null) this.sinceFlush += written;
    const playing = written > 0;
    this.quanta += 1;
    if (playing !== this.wasPlaying || (playing && this.quanta % STATS_EVERY === 0)) this.sendStats(playing);
    return true;
  }
}

registerProcessor("telebridge-playback", PlaybackProcessor);
