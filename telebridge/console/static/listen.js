// Listening in to a live phone call (only while it is recorded with consent): 24 kHz PCM16 over a WebSocket,
// played through the softphone's playback worklet. The server refuses with a reason the button shows.

const WORKLET = '/console/static/phone/playback-worklet.js';

export class ListenIn {
  constructor(callId, onStatus) {
    this.callId = callId;
    this.onStatus = onStatus;  // ('connecting' | 'listening' | 'stopped', detail)
    this.frames = 0;           // frames received (read by the tests)
    this.ctx = null;
    this.socket = null;
  }

  async start() {
    this.onStatus('connecting', '');
    this.ctx = new AudioContext();
    await this.ctx.audioWorklet.addModule(WORKLET);
    const player = new AudioWorkletNode(this.ctx, 'telebridge-playback', {
      numberOfInputs: 0, numberOfOutputs: 1, outputChannelCount: [1],
    });
    player.connect(this.ctx.destination);
    await this.ctx.resume();
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    this.socket = new WebSocket(`${scheme}://${location.host}/console/api/calls/${encodeURIComponent(this.callId)}/listen`);
    this.socket.binaryType = 'arraybuffer';
    this.socket.onopen = () => this.onStatus('listening', '');
    this.socket.onmessage = (event) => {
      const pcm = new Int16Array(event.data);
      const samples = new Float32Array(pcm.length);
      for (let i = 0; i < pcm.length; i++) samples[i] = pcm[i] / 32768;
      this.frames += 1;
      player.port.postMessage({type: 'push', samples}, [samples.buffer]);
    };
    this.socket.onclose = (event) => {
      this.onStatus('stopped', event.code === 1000 || event.code === 1005 ? (event.reason || '') : (event.reason || `closed (${event.code})`));
      this.stop();
    };
  }

  stop() {
    const socket = this.socket;
    this.socket = null;
    if (socket && socket.readyState <= WebSocket.OPEN) socket.close();
    this.ctx?.close();
    this.ctx = null;
  }
}
