// The console's HTTP API and its live feed (Server-Sent Events). The session cookie rides along by itself.

export class Unauthorized extends Error {}

export async function api(path, {method = 'GET', body} = {}) {
  const response = await fetch(path, {
    method,
    credentials: 'same-origin',
    headers: body === undefined ? {} : {'Content-Type': 'application/json'},
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await response.json(); } catch { /* not JSON */ }
  const message = data?.error?.message || data?.detail || `HTTP ${response.status}`;
  if (response.status === 401) throw new Unauthorized(message);
  if (!response.ok) throw new Error(message);
  return data;
}

export const session = () => api('/console/api/session');
export const login = (token) => api('/console/login', {method: 'POST', body: {token}});
export const logout = () => api('/console/logout', {method: 'POST', body: {}});
export const calls = () => api('/console/api/calls');
export const elsewhere = () => api('/console/api/elsewhere');
export const call = (id) => api(`/console/api/calls/${encodeURIComponent(id)}`);
export const recording = (id) => api(`/console/api/calls/${encodeURIComponent(id)}/recording`);
export const hangUp = (id) => api(`/console/api/calls/${encodeURIComponent(id)}/hangup`, {method: 'POST', body: {}});
export const transfer = (id, target) =>
  api(`/console/api/calls/${encodeURIComponent(id)}/transfer`, {method: 'POST', body: {target}});

/**
 * The live feed: onEvent(event) for each event, onStatus('live' | 'reconnecting' | 'closed').
 * The browser reconnects by itself; each connection starts with a fresh snapshot. A watcher the server dropped
 * (too slow) reconnects too. Returns {close()}.
 */
export function feed(onEvent, onStatus) {
  let source = null;
  let stopped = false;
  let retry = null;
  const open = () => {
    source = new EventSource('/console/api/events');
    source.onopen = () => onStatus('live');
    source.onmessage = (message) => {
      const event = JSON.parse(message.data);
      if (event.type === 'dropped') {
        source.close();
        onStatus('reconnecting');
        retry = setTimeout(open, 500);
        return;
      }
      onEvent(event);
    };
    source.onerror = () => {
      if (stopped) return;
      if (source.readyState === EventSource.CLOSED) {  // refused (e.g. 401): the caller decides what next
        onStatus('closed');
      } else {
        onStatus('reconnecting');
      }
    };
  };
  open();
  return {
    close() {
      stopped = true;
      clearTimeout(retry);
      source?.close();
    },
  };
}
