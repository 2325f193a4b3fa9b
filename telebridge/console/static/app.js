// The console page: login, the live feed, and the panels (live calls, one call in detail, charts, past calls).
import * as api from './api.js';
import {callsChart, latencyChart, timeline} from './charts.js';
import {renderDetail} from './detail.js';
import {clock, direction, duration, h, who} from './dom.js';
import {liveCard, setLevels, tick, updateCard} from './live.js';

const $ = (id) => document.getElementById(id);

const state = {
  live: new Map(),  // id -> the call's detail (summary, transcript, latency, timeline)
  past: [],  // summaries, newest first (the hub's history, then recordings not in it)
  recordings: [],
  stats: [],
  selected: null,  // call id
  shown: null,  // the selected past call's detail (fetched)
  offset: 0,  // server clock - this browser's clock (seconds)
  feed: null,
};

const now = () => Date.now() / 1000 + state.offset;

// --- login ------------------------------------------------------------------------------------------------------
function showLogin(message) {
  state.feed?.close();
  state.feed = null;
  $('main').hidden = true;
  $('logout').hidden = true;
  $('login').hidden = false;
  $('feed-status').dataset.state = 'offline';
  $('feed-status').textContent = 'not logged in';
  $('login-error').textContent = message || '';
  $('token').focus();
}

async function start() {
  let who;
  try {
    who = await api.session();
  } catch (e) {
    if (e instanceof api.Unauthorized) return showLogin('');
    $('feed-status').textContent = `cannot reach the server: ${e.message}`;
    $('feed-status').dataset.state = 'offline';
    setTimeout(start, 3000);
    return;
  }
  $('login').hidden = true;
  $('main').hidden = false;
  $('logout').hidden = who.via !== 'session';
  openFeed();
  loadRecordings();
  pollElsewhere();
}

// --- calls on other instances (REDIS_URL): polled, since they are not in this worker's feed --------------------
const ELSEWHERE_EVERY_MS = 5000;
let elsewhereTimer = null;

async function pollElsewhere() {
  clearTimeout(elsewhereTimer);
  let data = null;
  try { data = await api.elsewhere(); } catch { /* logged out or offline: the feed handles that */ }
  if (data && data.shared) {
    renderElsewhere(data.calls);
    elsewhereTimer = setTimeout(pollElsewhere, ELSEWHERE_EVERY_MS);
  }
}

function renderElsewhere(calls) {
  $('elsewhere').hidden = false;
  $('elsewhere-count').textContent = String(calls.length);
  $('elsewhere-calls').replaceChildren(...calls.map((call) => {
    const hangUp = h('button', {type: 'button', class: 'danger', 'data-testid': 'elsewhere-hangup'}, 'Hang up');
    hangUp.addEventListener('click', async () => {
      hangUp.disabled = true;
      try { await api.hangUp(call.id); pollElsewhere(); } catch (e) { hangUp.textContent = e.message; }
    });
    return h('tr', {dataset: {callId: call.id}, 'data-testid': 'elsewhere-call'},
      h('td', {}, call.since ? clock(call.since) : '—'), h('td', {}, call.direction),
      h('td', {}, call.number || '—'), h('td', {}, call.instance || '—'), h('td', {}, call.status),
      h('td', {}, hangUp));
  }));
}

$('login-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const token = $('token').value;
  $('login-error').textContent = '';
  try {
    await api.login(token);
  } catch (e) {
    $('token').select();
    return showLogin(e instanceof api.Unauthorized ? `Refused: ${e.message}` : e.message);
  }
  $('token').value = '';
  start();
});

$('logout').addEventListener('click', async () => {
  try { await api.logout(); } finally { showLogin('Logged out.'); }
});

// --- the live feed ------------------------------------------------------------------------------------------------
function setStatus(status) {
  const el = $('feed-status');
  el.dataset.state = status === 'live' ? 'live' : status === 'closed' ? 'offline' : 'connecting';
  el.textContent = status === 'live' ? 'live' : status === 'closed' ? 'disconnected' : 'reconnecting…';
}

function openFeed() {
  state.feed?.close();
  state.feed = api.feed(onEvent, async (status) => {
    setStatus(status);
    if (status === 'closed') {  // refused, or the server is gone: a login that expired shows the form again
      try {
        await api.session();
        setTimeout(openFeed, 2000);
      } catch (e) {
        if (e instanceof api.Unauthorized) showLogin('Your login has expired: log in again.');
        else setTimeout(openFeed, 3000);
      }
    }
  });
}

async function loadRecordings() {
  try {
    const snapshot = await api.calls();
    state.recordings = snapshot.recordings || [];
    renderPast();
  } catch { /* the feed's snapshot has the rest */ }
}

function onEvent(event) {
  switch (event.type) {
    case 'snapshot':
      state.offset = event.now - Date.now() / 1000;
      state.live = new Map(event.live.map((c) => [c.id, c]));
      state.past = event.past;
      state.stats = event.stats;
      renderLive();
      renderPast();
      renderCharts();
      renderSelected();
      break;
    case 'call':
      state.live.set(event.call.id, event.call);
      renderLive();
      break;
    case 'state': {
      const call = state.live.get(event.call_id);
      if (!call) break;
      call.state = event.state;
      call.turns = event.turns;
      const li = cardOf(call.id);
      if (li) updateCard(li, call, now());
      if (state.selected === call.id) renderSelected();
      break;
    }
    case 'entry': {
      const call = state.live.get(event.call_id);
      if (!call) break;
      const list = call.transcript;
      const at = list.findIndex((e) => e.id === event.entry.id);
      if (at >= 0) list[at] = event.entry; else list.push(event.entry);
      if (state.selected === call.id) renderSelected();
      break;
    }
    case 'entry_removed': {
      const call = state.live.get(event.call_id);
      if (!call) break;
      call.transcript = call.transcript.filter((e) => e.id !== event.id);
      if (state.selected === call.id) renderSelected();
      break;
    }
    case 'latency': {
      const call = state.live.get(event.call_id);
      if (!call) break;
      const at = call.latency.findIndex((r) => r.turn === event.row.turn);
      if (at >= 0) call.latency[at] = event.row; else call.latency.push(event.row);
      if (state.selected === call.id) renderSelected();
      break;
    }
    case 'mark': {
      const call = state.live.get(event.call_id);
      if (!call) break;
      call.timeline.push(event.mark);
      if (state.selected === call.id) renderTimeline(call);
      break;
    }
    case 'levels':
      for (const [id, levels] of Object.entries(event.levels)) {
        const li = cardOf(id);
        if (li) setLevels(li, levels);
      }
      break;
    case 'stats':
      state.stats = event.stats;
      renderCharts();
      break;
    case 'ended':
      state.live.delete(event.call.id);
      state.past = [event.call, ...state.past.filter((c) => c.id !== event.call.id)];
      renderLive();
      renderPast();
      if (state.selected === event.call.id) select(event.call.id);
      break;
    default:
      break;
  }
}

// --- rendering ----------------------------------------------------------------------------------------------------
function cardOf(id) {
  return [...$('live-calls').children].find((li) => li.dataset.callId === id) || null;
}

function renderLive() {
  const list = $('live-calls');
  for (const li of [...list.children]) {
    if (!state.live.has(li.dataset.callId)) li.remove();
  }
  for (const call of state.live.values()) {
    let li = cardOf(call.id);
    if (!li) {
      li = liveCard(call, select);
      list.append(li);
    }
    updateCard(li, call, now());
    li.classList.toggle('selected', state.selected === call.id);
  }
  $('live-count').textContent = String(state.live.size);
  if (!state.selected && state.live.size) select(state.live.keys().next().value);
}

function renderPast() {
  const rows = [...state.past, ...state.recordings.filter((r) => !state.past.some((p) => p.id === r.id))];
  $('past-calls').replaceChildren(...rows.map((call) => h('tr', {
    class: `past-call${state.selected === call.id ? ' selected' : ''}`, dataset: {callId: call.id},
    'data-testid': 'past-call', onclick: () => select(call.id)},
    h('td', {}, clock(call.started)), h('td', {}, direction(call)), h('td', {}, who(call)),
    h('td', {}, call.agent || '—'), h('td', {}, duration(call.duration)),
    h('td', {'data-testid': 'past-outcome'}, call.outcome || '—',
      call.source === 'recording' ? h('span', {class: 'source'}, ' (recording)') : null),
    h('td', {}, call.turns ?? '—'))));
}

function renderCharts() {
  latencyChart($('chart-latency'), state.stats);
  callsChart($('chart-calls'), state.stats);
}

function renderSelected() {
  const id = state.selected;
  if (!id) return;
  const call = state.live.get(id) || (state.shown?.id === id ? state.shown : null);
  if (call) renderDetail($('detail'), $('detail-title'), call, now(), showRecording);
}

async function showRecording(id) {
  try {
    state.shown = await api.recording(id);
    if (state.selected === id) renderSelected();
  } catch (e) {
    $('detail').replaceChildren(h('p', {class: 'error'}, e.message));
  }
}

function renderTimeline(call) {
  const box = document.querySelector('#detail .timeline');
  if (box) box.replaceChildren(timeline(call, now() - call.started));
}

async function select(id) {
  state.selected = id;
  for (const li of $('live-calls').children) li.classList.toggle('selected', li.dataset.callId === id);
  for (const tr of $('past-calls').children) tr.classList.toggle('selected', tr.dataset.callId === id);
  if (state.live.has(id)) return renderSelected();
  try {
    state.shown = await api.call(id);
    if (state.selected === id) renderSelected();
  } catch (e) {
    $('detail').replaceChildren(h('p', {class: 'error'}, e.message));
  }
}

setInterval(() => {  // durations tick; the selected live call's header too
  for (const call of state.live.values()) {
    const li = cardOf(call.id);
    if (li) tick(li, call, now());
  }
  const head = document.querySelector('[data-testid="detail-duration"]');
  const call = state.live.get(state.selected);
  if (head && call) head.textContent = duration(now() - call.started);
}, 1000);

start();
