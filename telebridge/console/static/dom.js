// Small DOM and formatting helpers (no framework).

/** h('li', {class: 'x', dataset: {id: 1}, onclick: fn}, child, 'text') -> Element */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key.startsWith('on')) el.addEventListener(key.slice(2), value);
    else if (key === 'text') el.textContent = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const SVG_NS = 'http://www.w3.org/2000/svg';

/** An SVG element with attributes (and an optional <title> tooltip). */
export function s(tag, attrs = {}, title = null) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value !== undefined && value !== null) el.setAttribute(key, String(value));
  }
  if (title) {
    const t = document.createElementNS(SVG_NS, 'title');
    t.textContent = title;
    el.append(t);
  }
  return el;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return '—';
  const total = Math.max(0, Math.floor(seconds));
  const m = Math.floor(total / 60), sec = total % 60;
  return m >= 60 ? `${Math.floor(m / 60)}:${String(m % 60).padStart(2, '0')}:${String(sec).padStart(2, '0')}`
                 : `${m}:${String(sec).padStart(2, '0')}`;
}

export function ms(seconds) {
  return seconds === null || seconds === undefined ? '—' : `${Math.round(seconds * 1000)}`;
}

export function clock(unixSeconds) {
  const d = new Date(unixSeconds * 1000);
  return d.toLocaleString(undefined, {month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit',
                                      second: '2-digit'});
}

export function who(call) {
  if (call.transport === 'realtime') return 'browser session';
  return call.number || 'unknown number';
}

export function direction(call) {
  return call.transport === 'realtime' ? 'realtime' : (call.direction === 'outbound' ? '↗ outbound' : '↘ inbound');
}
