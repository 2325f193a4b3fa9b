// Hand-written SVG charts: the last hour's latency percentiles and concurrent calls, a turn's latency waterfall,
// and a call's timeline. Everything is drawn in a viewBox and scales with its container.
import {s} from './dom.js';

function label(attrs, text) {
  const el = s('text', attrs);
  el.textContent = text;
  return el;
}

const W = 600, H = 150, PAD = {l: 40, r: 8, t: 8, b: 20};

function frame(svg, yMax, yLabel, ticks = 4) {
  const plotH = H - PAD.t - PAD.b;
  for (let i = 0; i <= ticks; i++) {
    const v = (yMax * i) / ticks;
    const y = PAD.t + plotH - (plotH * i) / ticks;
    svg.append(s('line', {class: 'grid', x1: PAD.l, x2: W - PAD.r, y1: y, y2: y}));
    svg.append(label({class: 'axis-label', x: PAD.l - 4, y: y + 3, 'text-anchor': 'end'}, yLabel(v)));
  }
  svg.append(label({class: 'axis-label', x: PAD.l, y: H - 4}, '−60 min'));
  svg.append(label({class: 'axis-label', x: W - PAD.r, y: H - 4, 'text-anchor': 'end'}, 'now'));
}

function niceMax(value, floor) {
  const v = Math.max(value, floor);
  const step = 10 ** Math.floor(Math.log10(v));
  return Math.ceil(v / step) * step;
}

/** p50 / p90 / p99 turn latency per minute (milliseconds), with gaps where a minute had no turns. */
export function latencyChart(container, stats) {
  const svg = s('svg', {viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'turn latency percentiles'});
  const values = stats.flatMap((p) => [p.p50, p.p90, p.p99]).filter((v) => v !== null);
  const yMax = niceMax(values.length ? Math.max(...values) * 1000 : 0, 500);
  frame(svg, yMax, (v) => `${Math.round(v)}`);
  const plotW = W - PAD.l - PAD.r, plotH = H - PAD.t - PAD.b;
  const x = (i) => PAD.l + (stats.length > 1 ? (plotW * i) / (stats.length - 1) : plotW);
  const y = (v) => PAD.t + plotH - (plotH * v * 1000) / yMax;
  for (const key of ['p99', 'p90', 'p50']) {
    let d = '';
    let pen = false;
    stats.forEach((point, i) => {
      const v = point[key];
      if (v === null) { pen = false; return; }
      d += `${pen ? 'L' : 'M'}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
    });
    // a lone minute still shows: a dot
    stats.forEach((point, i) => {
      const v = point[key];
      const lone = v !== null && (stats[i - 1]?.[key] ?? null) === null && (stats[i + 1]?.[key] ?? null) === null;
      if (lone) svg.append(s('circle', {class: `line ${key}`, cx: x(i), cy: y(v), r: 2},
                                       `${key} ${Math.round(v * 1000)} ms (${point.turns} turns)`));
    });
    if (d) svg.append(s('path', {class: `line ${key}`, d}, key));
  }
  svg.append(label({class: 'axis-label', x: W - PAD.r, y: PAD.t + 10, 'text-anchor': 'end'},
                   'ms · p50 green · p90 amber · p99 red'));
  container.replaceChildren(svg);
}

/** Peak concurrent calls per minute, as bars. */
export function callsChart(container, stats) {
  const svg = s('svg', {viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'concurrent calls'});
  const yMax = niceMax(Math.max(0, ...stats.map((p) => p.calls)), 4);
  frame(svg, yMax, (v) => (Number.isInteger(v) ? `${v}` : ''), 4);
  const plotW = W - PAD.l - PAD.r, plotH = H - PAD.t - PAD.b;
  const bw = plotW / Math.max(1, stats.length);
  const bars = s('g', {class: 'bars'});
  stats.forEach((point, i) => {
    if (!point.calls) return;
    const h = (plotH * point.calls) / yMax;
    bars.append(s('rect', {x: PAD.l + i * bw + 0.5, y: PAD.t + plotH - h, width: Math.max(1, bw - 1), height: h},
                  `${point.calls} call(s)`));
  });
  svg.append(bars);
  container.replaceChildren(svg);
}

export const WATERFALL_STAGES = [
  ['endpointing', 'endpointing', 's-endpointing'], ['stt', 'STT', 's-stt'], ['llm_first_token', 'LLM first token', 's-llm'],
  ['tts_first_audio', 'TTS first audio', 's-tts'], ['heard', 'to first audio heard', 's-heard'],
];

/** One answered turn: endpointing (STT inside it), LLM first token, TTS first audio, then until it was heard. */
export function waterfall(row, scale) {
  const width = 300, height = 14;
  const svg = s('svg', {viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: 'none', role: 'img',
                        'aria-label': `turn ${row.turn} latency`});
  const px = (sec) => (width * Math.max(0, sec)) / scale;
  const e = row.endpointing ?? 0, llm = row.llm_first_token ?? 0, tts = row.tts_first_audio ?? 0;
  const end = row.heard ?? row.total ?? e + llm + tts;
  const bar = (from, to, cls, label, y = 2, h = 10) => {
    if (to > from) svg.append(s('rect', {class: cls, x: px(from), y, width: Math.max(1, px(to) - px(from)), height: h},
                                         `${label}: ${Math.round((to - from) * 1000)} ms`));
  };
  bar(0, e, 's-endpointing', 'endpointing');
  bar(Math.max(0, e - (row.stt ?? 0)), e, 's-stt', 'STT', 5, 4);
  bar(e, e + llm, 's-llm', 'LLM first token');
  bar(e + llm, e + llm + tts, 's-tts', 'TTS first audio');
  bar(e + llm + tts, end, 's-heard', row.heard !== null ? 'sent → heard' : 'sending');
  return svg;
}

const MARK_KINDS = new Set(['barge_in', 'paused', 'resumed', 'dtmf', 'operator', 'ending']);

/** The call's timeline: caller speech and agent audio as two lanes, markers for barge-ins, DTMF and endings. */
export function timeline(call, nowOffset) {
  const events = call.timeline || [];
  const end = Math.max(1, nowOffset ?? call.duration ?? 0, ...events.map((e) => e.t));
  const width = 600, height = 52;
  const svg = s('svg', {viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': 'call timeline'});
  const x = (t) => 60 + ((width - 66) * t) / end;
  svg.append(label({class: 'axis-label', x: 0, y: 16}, 'caller'));
  svg.append(label({class: 'axis-label', x: 0, y: 34}, 'agent'));
  svg.append(s('line', {class: 'axis', x1: 60, x2: width, y1: 44, y2: 44}));
  svg.append(label({class: 'axis-label', x: width, y: 52, 'text-anchor': 'end'}, `${end.toFixed(0)} s`));
  let callerFrom = null, agentFrom = null;
  const span = (from, to, lane) => {
    const y = lane === 'caller' ? 8 : 26;
    svg.append(s('rect', {class: `lane-${lane}`, x: x(from), y, width: Math.max(1.5, x(to) - x(from)), height: 10},
                 `${lane} ${from.toFixed(1)}–${to.toFixed(1)} s`));
  };
  for (const ev of events) {
    if (ev.kind === 'caller_start') callerFrom = callerFrom ?? ev.t;
    else if (ev.kind === 'caller_stop' && callerFrom !== null) { span(callerFrom, ev.t, 'caller'); callerFrom = null; }
    else if (ev.kind === 'agent_start' || ev.kind === 'resumed') agentFrom = agentFrom ?? ev.t;
    else if ((ev.kind === 'agent_stop' || ev.kind === 'paused' || ev.kind === 'ended') && agentFrom !== null) {
      span(agentFrom, ev.t, 'agent'); agentFrom = null;
    }
    if (MARK_KINDS.has(ev.kind)) {
      svg.append(s('line', {class: `mark ${ev.kind}`, x1: x(ev.t), x2: x(ev.t), y1: 4, y2: 40},
                   `${ev.t.toFixed(1)} s: ${ev.detail || ev.kind}`));
    }
  }
  if (callerFrom !== null) span(callerFrom, end, 'caller');
  if (agentFrom !== null) span(agentFrom, end, 'agent');
  return svg;
}
