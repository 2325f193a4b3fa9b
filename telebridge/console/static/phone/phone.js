// The softphone page: settings, the call button, the transcript. Audio lives in audio-io.js, the socket in
// realtime.js. `window.phoneDebug` exposes counters for tests and for anyone debugging a call.

import { AudioError, openAudio } from "./audio-io.js";
import { RealtimeSocket, describeClose, fromBase64, realtimeUrl } from "./realtime.js";

const $ = (id) => document.getElementById(id);
const root = $("phone");
const urls = {
  session: root.dataset.sessionUrl,
  voices: root.dataset.voicesUrl,
  login: root.dataset.loginUrl,
  realtime: root.dataset.realtimePath,
};
const ui = {
  voice: $("voice"), reloadVoices: $("reload-voices"), character: $("character"), scenario: $("scenario"),
  consent: $("consent"), cloneFile: $("clone-file"), clone: $("clone"), call: $("call"), mute: $("mute"),
  level: $("mic-level"), status: $("status"), error: $("error"), transcript: $("transcript"),
  login: $("login"), loginToken: $("login-token"),
};

const debug = {
  state: "idle",
  events: {}, // server event type → count
  chunksSent: 0,
  playedSeconds: 0,
  queuedSeconds: 0,
  playing: false,
  audioDeltas: 0,
  ignoredAudioDeltas: 0, // audio of a reply already cut off
  interruptions: 0,
  droppedSeconds: 0, // queued agent audio dropped by the last interruption
  playedAtInterrupt: null,
  playedSinceFlushSeconds: null, // agent audio played after the last flush, before new audio came
  contextRate: null,
  voice: null, // the voice of the last response.created
  errors: [],
};
window.phoneDebug = debug;

let call = null; // {socket, audio, configured, acceptAudio, muted}

// --- status and errors ----------------------------------------------------------------------------------------

function setState(state, text) {
  debug.state = state;
  ui.status.dataset.state = state;
  if (text !== undefined) ui.status.textContent = text;
  const inCall = state === "connecting" || state === "live";
  ui.call.dataset.action = inCall ? "hangup" : "call";
  ui.call.textContent = inCall ? "Hang up" : "Call";
  ui.mute.disabled = state !== "live";
  if (!inCall) {
    ui.mute.setAttribute("aria-pressed", "false");
    ui.mute.textContent = "Mute";
    ui.level.value = 0;
  }
}

function showError(text) {
  debug.errors.push(text);
  ui.error.textContent = text;
  ui.error.hidden = false;
}

function clearError() {
  ui.error.hidden = true;
  ui.error.textContent = "";
}

/** A failed request; a 401 also shows the console's login form. */
class HttpError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
    if (status === 401) showLogin();
  }
}

async function failure(response) {
  return new HttpError(response.status, await responseError(response));
}

async function responseError(response) {
  let detail = "";
  try {
    const body = await response.json();
    detail = body?.error?.message || (typeof body?.detail === "string" ? body.detail : "") || "";
  } catch (_) { /* not JSON */ }
  return `HTTP ${response.status}${detail ? `: ${detail}` : ""}`;
}

// --- voices ---------------------------------------------------------------------------------------------------

async function loadVoices(select) {
  const keep = select ?? ui.voice.value;
  try {
    const response = await fetch(urls.voices, { credentials: "same-origin", cache: "no-store" });
    if (!response.ok) throw await failure(response);
    const voices = await response.json();
    while (ui.voice.options.length > 1) ui.voice.remove(1);
    for (const v of voices) {
      const details = [v.language, v.gender].filter(Boolean).join(", ");
      const cloned = v.name.startsWith("cloned_voice_") ? "cloned" : "";
      const label = [details, cloned].filter(Boolean).join("; ");
      ui.voice.add(new Option(label ? `${v.name} (${label})` : v.name, v.name));
    }
    ui.voice.value = [...ui.voice.options].some((o) => o.value === keep) ? keep : "";
  } catch (err) {
    if (err.status === 401) ui.status.textContent = "Log in to use the softphone.";
    else showError(`Could not load the voices: ${err.message}`);
  }
}

async function cloneVoice() {
  const file = ui.cloneFile.files?.[0];
  if (!file) {
    showError("Choose an audio file to clone a voice from.");
    return;
  }
  clearError();
  ui.clone.disabled = true;
  const previous = ui.status.textContent;
  ui.status.textContent = `Cloning a voice from ${file.name}…`;
  try {
    const form = new FormData();
    form.append("file", file, file.name);
    const response = await fetch(urls.voices, { method: "POST", body: form, credentials: "same-origin" });
    if (!response.ok) throw await failure(response);
    const { name } = await response.json();
    await loadVoices(name);
    if (![...ui.voice.options].some((o) => o.value === name)) ui.voice.add(new Option(`${name} (cloned)`, name));
    ui.voice.value = name;
    ui.status.textContent = `Voice cloned: ${name} (selected).`;
    if (call) sendUpdate({ voice: name });
  } catch (err) {
    ui.status.textContent = previous;
    showError(`Voice cloning failed: ${err.message}`);
  } finally {
    ui.clone.disabled = false;
  }
}

// --- the session's configuration ------------------------------------------------------------------------------

function instructions() {
  const character = ui.character.value.trim();
  const scenario = ui.scenario.value.trim();
  return character || scenario ? { character: character || null, scenario: scenario || null } : null;
}

function fullConfig() {
  return {
    voice: ui.voice.value || null,
    instructions: instructions(),
    allow_recording: ui.consent.checked,
    input_audio_format: "pcm16",
    output_audio_format: "pcm16",
  };
}

/** Send a change mid-call (everything, while the first update has not been accepted). */
function sendUpdate(fields) {
  if (!call) return;
  call.socket.send({ type: "session.update", session: call.configured ? fields : fullConfig() });
}

// --- the transcript -------------------------------------------------------------------------------------------

let userLine = null; // {el, start}
let agentLine = null;

function addLine(kind, text = "") {
  const li = document.createElement("li");
  li.className = kind;
  li.textContent = text;
  ui.transcript.append(li);
  ui.transcript.scrollTop = ui.transcript.scrollHeight;
  return li;
}

function userWords(delta, start) {
  if (!userLine || userLine.start !== start) userLine = { el: addLine("user"), start };
  userLine.el.textContent += delta;
  ui.transcript.scrollTop = ui.transcript.scrollHeight;
}

function agentWords(delta) {
  if (!agentLine) agentLine = addLine("agent");
  agentLine.textContent += delta;
  ui.transcript.scrollTop = ui.transcript.scrollHeight;
}

// --- server events --------------------------------------------------------------------------------------------

function onEvent(event) {
  debug.events[event.type] = (debug.events[event.type] || 0) + 1;
  switch (event.type) {
    case "session.updated":
      if (!call.configured) {
        call.configured = true;
        setState("live", "Connected. Speak whenever you like; talking over the agent interrupts it.");
      }
      break;
    case "response.audio.delta":
      debug.audioDeltas += 1;
      if (call.acceptAudio) call.audio.playPcm16(fromBase64(event.delta));
      else debug.ignoredAudioDeltas += 1;
      break;
    case "unmute.interrupted_by_vad":
      // Stop the agent at once: drop what is queued, and whatever of this reply is still on its way.
      call.audio.flush();
      call.acceptAudio = false;
      debug.interruptions += 1;
      if (agentLine) agentLine.classList.add("interrupted");
      break;
    case "response.created":
      call.acceptAudio = true;
      debug.voice = event.response?.voice ?? null;
      agentLine = addLine("agent");
      break;
    case "response.text.delta":
      agentWords(event.delta);
      break;
    case "response.text.done":
      if (agentLine) {
        if (event.text) agentLine.textContent = event.text; // what was said (or, cut off, what was heard)
        else agentLine.remove(); // talked over before a word was heard
      }
      agentLine = null;
      break;
    case "conversation.item.input_audio_transcription.delta":
      userWords(event.delta, event.start_time);
      break;
    case "conversation.item.input_audio_transcription.completed":
      if (userLine) userLine.el.textContent = event.transcript;
      userLine = null;
      break;
    case "error":
      onServerError(event.error || {});
      break;
    default:
      break;
  }
}

function onServerError(error) {
  const details = (error.details || []).map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("\n");
  const text = `${error.message || "error"}${details ? `\n${details}` : ""}`;
  if (error.type === "warning") {
    debug.errors.push(`warning: ${text}`);
    ui.status.textContent = `Server warning: ${error.message}`;
  } else if (error.type === "fatal") {
    showError(`The server stopped the call: ${text}`);
  } else if (error.code === "unknown_voice") {
    showError(`The server does not know the voice “${ui.voice.value}”. Reload the list and pick another.`);
  } else {
    showError(`The server refused a message: ${text}`);
  }
}

function onPlayback(message) {
  if (message.type === "stats") {
    debug.playedSeconds = message.playedSeconds;
    debug.queuedSeconds = message.queuedSeconds;
    debug.playing = message.playing;
  } else if (message.type === "flushed") {
    debug.droppedSeconds = message.droppedSeconds;
    debug.playedAtInterrupt = message.playedSeconds;
  } else if (message.type === "resumed") {
    debug.playedSinceFlushSeconds = message.playedSinceFlushSeconds;
  }
}

// --- the call -------------------------------------------------------------------------------------------------

async function sessionToken() {
  const response = await fetch(urls.session, { method: "POST", credentials: "same-origin", cache: "no-store" });
  if (response.status === 401) throw new HttpError(401, "Log in to the console first (below), then call again.");
  if (!response.ok) throw new Error(`The server would not start a call: ${await responseError(response)}`);
  return (await response.json()).token;
}

// --- the console's login (an HttpOnly cookie the console sets; the page never sees the token again) ----------

function showLogin() {
  if (!ui.login.hidden) return;
  ui.login.hidden = false;
  ui.loginToken.focus();
}

async function logIn(event) {
  event.preventDefault();
  clearError();
  try {
    const response = await fetch(urls.login, {
      method: "POST", credentials: "same-origin", cache: "no-store",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify({ token: ui.loginToken.value }),
    });
    if (!response.ok) throw new Error(await responseError(response));
    ui.loginToken.value = "";
    ui.login.hidden = true;
    ui.status.textContent = "Logged in. Press Call, then speak.";
    await loadVoices();
  } catch (err) {
    showError(`Login failed: ${err.message}`);
  }
}

async function startCall() {
  clearError();
  setState("connecting", "Opening the microphone…");
  const pending = { configured: false, acceptAudio: true, muted: false, closing: false };
  call = pending;
  try {
    pending.audio = await openAudio({
      onChunk: (pcm, peak) => {
        ui.level.value = pending.muted ? 0 : Math.min(1, peak * 1.5);
        if (pending.configured && pending.socket) {
          pending.socket.sendAudio(pcm);
          debug.chunksSent += 1;
        }
      },
      onPlayback,
    });
    debug.contextRate = pending.audio.contextRate;
    pending.audio.onMicEnded = () => endCall("The microphone stopped (unplugged, or access was withdrawn).");
    if (call !== pending) return pending.audio.close(); // hung up meanwhile
    setState("connecting", "Connecting to the agent…");
    const token = await sessionToken();
    if (call !== pending) return pending.audio.close();
    pending.socket = new RealtimeSocket(realtimeUrl(urls.realtime), token, {
      onOpen: () => pending.socket.send({ type: "session.update", session: fullConfig() }),
      onEvent: (event) => call === pending && onEvent(event),
      onClose: (code, reason, opened) => {
        if (call === pending && !pending.closing) endCall(describeClose(code, reason, opened), code !== 1000);
      },
    });
  } catch (err) {
    if (call === pending) {
      await endCall(null);
      showError(err instanceof AudioError ? err.message : err.message || String(err));
      setState("idle", "Not connected.");
    }
  }
}

async function endCall(reason, isError = false) {
  const ending = call;
  if (!ending) return;
  call = null;
  ending.closing = true;
  userLine = null;
  agentLine = null;
  ending.socket?.close();
  await ending.audio?.close();
  if (reason && isError) showError(reason);
  setState("idle", reason && !isError ? reason : "Call ended. Press Call to talk again.");
}

// --- wiring ---------------------------------------------------------------------------------------------------

ui.call.addEventListener("click", () => {
  if (call) endCall("You hung up.");
  else startCall();
});
ui.mute.addEventListener("click", () => {
  if (!call?.audio) return;
  call.muted = !call.muted;
  call.audio.mute(call.muted);
  ui.mute.setAttribute("aria-pressed", String(call.muted));
  ui.mute.textContent = call.muted ? "Unmute" : "Mute";
});
ui.reloadVoices.addEventListener("click", () => loadVoices());
ui.clone.addEventListener("click", cloneVoice);
ui.login.addEventListener("submit", logIn);
ui.voice.addEventListener("change", () => sendUpdate({ voice: ui.voice.value || null }));
ui.consent.addEventListener("change", () => sendUpdate({ allow_recording: ui.consent.checked }));
for (const field of [ui.character, ui.scenario]) {
  field.addEventListener("change", () => sendUpdate({ instructions: instructions() }));
}
window.addEventListener("pagehide", () => call?.socket?.close());

setState("idle");
loadVoices();
