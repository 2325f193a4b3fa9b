// One call in detail: its transcript (both sides, with barge-in / resume / DTMF markers), the per-turn latency
// waterfall and the timeline.
import {timeline, waterfall, WATERFALL_STAGES} from './charts.js';
import {direction, duration, h, ms, who, clock} from './dom.js';

function entryItem(entry) {
  const cls = `entry ${entry.who}`;
  const attrs = {class: cls, dataset: {id: entry.id, state: entry.state || '', kind: entry.kind || ''},
                 'data-testid': `entry-${entry.who}`};
  const time = h('span', {class: 't'}, `${entry.t.toFixed(1)}s`);
  if (entry.who === 'event') return h('li', attrs, time, entry.text);
  const text = entry.text || (entry.state === 'thinking' ? '…' : '');
  return h('li', attrs, time, text);
}

export function transcriptList(call) {
  return h('ol', {class: 'transcript', 'data-testid': 'transcript'}, (call.transcript || []).map(entryItem));
}

export function latencyTable(call) {
  const rows = call.latency || [];
  const scale = Math.max(1, ...rows.map((r) => r.heard ?? r.total ?? 0));
  const table = h('table', {class: 'latency'},
    h('thead', {}, h('tr', {},
      h('th', {}, 'turn'), h('th', {}, 'endpt'), h('th', {}, 'STT'), h('th', {}, 'LLM 1st'), h('th', {}, 'TTS 1st'),
      h('th', {}, 'heard'), h('th', {}, `0 – ${scale.toFixed(1)} s`))),
    h('tbody', {'data-testid': 'latency-rows'}, rows.map((row) => h('tr', {dataset: {turn: row.turn},
                                                                           'data-testid': 'latency-row'},
      h('td', {}, row.turn), h('td', {}, ms(row.endpointing)), h('td', {}, ms(row.stt)),
      h('td', {}, ms(row.llm_first_token)), h('td', {}, ms(row.tts_first_audio)),
      h('td', {'data-testid': 'latency-heard'}, ms(row.heard ?? null)),
      h('td', {class: 'bar'}, waterfall(row, scale))))));
  const legend = h('div', {class: 'legend'},
    WATERFALL_STAGES.map(([, label, cls]) => h('span', {}, h('i', {class: cls}), label)));
  return [table, legend];
}

/** The whole detail panel for ``call`` (a live call's detail, a past call's, or a recording's). */
export function renderDetail(container, title, call, nowSeconds, onRecording = null) {
  const live = call.live;
  title.textContent = live ? 'Live call' : 'Past call';
  const offset = live && nowSeconds ? nowSeconds - call.started : call.duration;
  let source = null;
  if (call.source === 'recording') source = h('span', {class: 'source'}, 'from its recording');
  else if (call.recording && onRecording) {
    source = h('button', {type: 'button', class: 'link', 'data-testid': 'open-recording',
                          onclick: () => onRecording(call.id)}, 'open its recording');
  }
  const scroll = container.querySelector('.transcript');
  const atBottom = !scroll || scroll.scrollTop + scroll.clientHeight >= scroll.scrollHeight - 8;
  container.replaceChildren(
    h('div', {class: 'detail-head', dataset: {callId: call.id}, 'data-testid': 'detail-head'},
      h('strong', {}, who(call)), h('span', {class: 'meta'}, direction(call)),
      h('span', {class: 'meta'}, `agent ${call.agent || '—'}`),
      h('span', {class: 'meta'}, clock(call.started)),
      h('span', {class: 'meta', 'data-testid': 'detail-duration'}, duration(offset)),
      h('span', {class: 'state', dataset: {state: call.state}, 'data-testid': 'detail-state'},
        live ? call.state : (call.outcome || 'ended')),
      source),
    h('h3', {}, 'Transcript'), transcriptList(call),
    h('h3', {}, 'Latency per turn (ms)'),
    ...((call.latency || []).length ? latencyTable(call) : [h('p', {class: 'empty'}, 'No answered turns yet.')]),
    h('h3', {}, 'Timeline'), h('div', {class: 'timeline'}, timeline(call, offset)));
  const list = container.querySelector('.transcript');
  if (atBottom) list.scrollTop = list.scrollHeight;
}
