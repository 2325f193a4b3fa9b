// The realtime API's socket (telebridge's Unmute-compatible /v1/realtime): JSON events, base64 audio.

export const SUBPROTOCOL = "realtime";
const TOKEN_SUBPROTOCOL = "telebridge-token.";

export function toBase64(buffer) {
  const bytes = new Uint8Array(buffer);
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
}

export function fromBase64(text) {
  const raw = atob(text);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
  return bytes;
}

export function realtimeUrl(path) {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}${path}`;
}

/** Why a socket closed, in words for the status line. */
export function describeClose(code, reason, opened) {
  if (!opened) {
    return "The server refused the connection (not signed in to the console, the session token expired, or " +
      "the server is unreachable).";
  }
  switch (code) {
    case 1000: return reason ? `The agent ended the call: ${reason}` : "The call ended.";
    case 1001: return "The server is shutting down.";
    case 1008: return `The server ended the call: ${reason || "a limit was reached"}.`;
    case 1011: return `The server failed: ${reason || "internal error"}.`;
    case 1012:
    case 1013: return "The server is restarting or busy; call again in a moment.";
    case 1006: return "The connection to the server was lost.";
    default: return `The connection closed (code ${code}${reason ? `: ${reason}` : ""}).`;
  }
}

/**
 * One realtime session. `token` (may be null) travels as a WebSocket subprotocol, never in the URL.
 * Handlers: onOpen(), onEvent(event), onClose(code, reason, opened).
 */
export class RealtimeSocket {
  constructor(url, token, { onOpen, onEvent, onClose }) {
    const protocols = [SUBPROTOCOL];
    if (token) protocols.push(TOKEN_SUBPROTOCOL + token);
    this.opened = false;
    this.ws = new WebSocket(url, protocols);
    this.ws.onopen = () => {
      this.opened = true;
      onOpen();
    };
    this.ws.onmessage = (message) => {
      if (typeof message.data !== "string") return;
      let event;
      try {
        event = JSON.parse(message.data);
      } catch (_) {
        return;
      }
      onEvent(event);
    };
    this.ws.onclose = (event) => onClose(event.code, event.reason, this.opened);
  }

  get isOpen() {
    return this.ws.readyState === WebSocket.OPEN;
  }

  send(event) {
    if (this.isOpen) this.ws.send(JSON.stringify(event));
  }

  sendAudio(pcm16) {
    // A stalled connection must not pile audio up in the browser: past ~2 s buffered, drop the chunk.
    if (this.isOpen && this.ws.bufferedAmount < 2 * 24000 * 2 * 1.4) {
      this.ws.send(JSON.stringify({ type: "input_audio_buffer.append", audio: toBase64(pcm16) }));
    }
  }

  close() {
    if (this.ws.readyState === WebSocket.CONNECTING || this.isOpen) this.ws.close(1000, "hung up");
  }
}
