// Streaming sample-rate conversion for the softphone's AudioWorklets (no dependencies).
//
// Linear interpolation, preceded when downsampling by a 4th-order Butterworth low-pass at 45 % of the output
// rate (two RBJ biquads), so a 48 kHz microphone does not fold 12–24 kHz noise into the 24 kHz stream.
// State carries across blocks: feed it the 128-frame render quanta one after another.

class Biquad {
  constructor(cutoff, rate) {
    const w = (2 * Math.PI * cutoff) / rate;
    const alpha = Math.sin(w) / (2 * Math.SQRT1_2);
    const cos = Math.cos(w);
    const a0 = 1 + alpha;
    this.b0 = (1 - cos) / 2 / a0;
    this.b1 = (1 - cos) / a0;
    this.b2 = this.b0;
    this.a1 = (-2 * cos) / a0;
    this.a2 = (1 - alpha) / a0;
    this.x1 = this.x2 = this.y1 = this.y2 = 0;
  }

  run(input, output) {
    let { x1, x2, y1, y2 } = this;
    const { b0, b1, b2, a1, a2 } = this;
    for (let i = 0; i < input.length; i++) {
      const x = input[i];
      const y = b0 * x + b1 * x1 + b2 * x2 - a1 * y1 - a2 * y2;
      x2 = x1; x1 = x; y2 = y1; y1 = y;
      output[i] = y;
    }
    Object.assign(this, { x1, x2, y1, y2 });
  }
}

export class StreamResampler {
  constructor(inRate, outRate) {
    this.inRate = inRate;
    this.outRate = outRate;
    this.step = inRate / outRate;
    this.filters = inRate > outRate ? [new Biquad(0.45 * outRate, inRate), new Biquad(0.45 * outRate, inRate)] : [];
    this.reset();
  }

  reset() {
    this.pos = 0; // where the next output sample lies, in input samples from the block's start (-1 = `last`)
    this.last = 0;
    this.scratch = new Float32Array(0);
    for (const f of this.filters) f.x1 = f.x2 = f.y1 = f.y2 = 0;
  }

  /** One block of input samples → the output samples it completes (a new Float32Array, maybe empty). */
  process(input) {
    if (this.step === 1) return Float32Array.from(input);
    let x = input;
    if (this.filters.length) {
      if (this.scratch.length !== input.length) this.scratch = new Float32Array(input.length);
      this.filters[0].run(input, this.scratch);
      this.filters[1].run(this.scratch, this.scratch);
      x = this.scratch;
    }
    const n = x.length;
    const out = [];
    let t = this.pos;
    while (t < n - 1) {
      const i = Math.floor(t);
      const frac = t - i;
      const a = i < 0 ? this.last : x[i];
      out.push(a + (x[i + 1] - a) * frac);
      t += this.step;
    }
    if (n > 0) this.last = x[n - 1];
    this.pos = t - n;
    return Float32Array.from(out);
  }
}
