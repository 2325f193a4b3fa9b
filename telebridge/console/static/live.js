// A live call's card: who, agent, duration, turn state, level meters, hang-up and transfer.
import * as api from './api.js';
import {direction, duration, h, who} from './dom.js';
import {ListenIn} from './listen.js';

const ARM_SECONDS = 4;

/** RMS (0..1) to a meter fraction: -60 dBFS and below is empty, 0 dBFS full. */
function meter(rms) {
  if (!rms || rms <= 0) return 0;
  return Math.min(1, Math.max(0, (20 * Math.log10(rms) + 60) / 60));
}

function hangUpButton(call, error) {
  let armed = null;
  const button = h('button', {type: 'button', class: 'danger', 'data-testid': 'hangup'}, 'Hang up');
  button.addEventListener('click', async (event) => {
    event.stopPropagation();
    if (!armed) {  // first click arms, a second one within a few seconds hangs up
      button.classList.add('armed');
      button.textContent = 'Confirm hang-up';
      armed = setTimeout(() => { armed = null; button.classList.remove('armed'); button.textContent = 'Hang up'; },
                         ARM_SECONDS * 1000);
      return;
    }
    clearTimeout(armed);
    button.disabled = true;
    button.textContent = 'Hanging up…';
    error.textContent = '';
    try {
      await api.hangUp(call.id);
    } catch (e) {
      error.textContent = e.message;
      button.disabled = false;
      button.classList.remove('armed');
      button.textContent = 'Hang up';
      armed = null;
    }
  });
  return button;
}

function transferControls(call, error) {
  const input = h('input', {type: 'tel', placeholder: '+14155550123', 'aria-label': 'transfer to (E.164)',
                            'data-testid': 'transfer-number', autocomplete: 'off'});
  const submit = h('button', {type: 'submit', 'data-testid': 'transfer-submit'}, 'Transfer');
  const form = h('form', {class: 'transfer-form', hidden: true}, input, submit);
  const open = h('button', {type: 'button', 'data-testid': 'transfer'}, 'Transfer…');
  open.addEventListener('click', (event) => {
    event.stopPropagation();
    form.hidden = !form.hidden;
    if (!form.hidden) input.focus();
  });
  form.addEventListener('click', (event) => event.stopPropagation());
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    submit.disabled = true;
    error.textContent = '';
    try {
      await api.transfer(call.id, input.value);
      submit.textContent = 'Transferred';
    } catch (e) {
      error.textContent = e.message;
      submit.disabled = false;
    }
  });
  return [open, form];
}

function listenButton(call, error) {
  let session = null;
  const button = h('button', {type: 'button', 'data-testid': 'listen'}, 'Listen');
  button.addEventListener('click', async (event) => {
    event.stopPropagation();
    if (session) {
      session.stop();
      return;
    }
    error.textContent = '';
    session = new ListenIn(call.id, (status, detail) => {
      button.dataset.status = status;
      if (status === 'listening') button.textContent = 'Stop listening';
      if (status === 'stopped') {
        button.textContent = 'Listen';
        if (detail) error.textContent = detail;
        session = null;
      }
    });
    window.consoleListen = session;  // the browser tests read its frame count
    try {
      await session.start();
    } catch (e) {
      error.textContent = `cannot play audio: ${e.message}`;
      session?.stop();
      session = null;
    }
  });
  return button;
}

export function liveCard(call, onSelect) {
  const error = h('p', {class: 'error', role: 'alert', 'data-testid': 'action-error'});
  const li = h('li', {class: 'call', dataset: {callId: call.id}, 'data-testid': 'live-call', tabindex: 0},
    h('div', {class: 'row'},
      h('span', {class: 'dir'}, direction(call)),
      h('span', {class: 'who', 'data-testid': 'call-number'}, who(call)),
      h('span', {class: 'state', 'data-testid': 'call-state'}),
      h('span', {class: 'duration', 'data-testid': 'call-duration'})),
    h('div', {class: 'row meta'}, h('span', {}, `agent ${call.agent || '—'}`), h('span', {class: 'turns'})),
    h('div', {class: 'meters'},
      h('span', {}, 'caller'), h('div', {class: 'meter caller', 'data-testid': 'meter-caller'}, h('span')),
      h('span', {}, 'agent'), h('div', {class: 'meter agent', 'data-testid': 'meter-agent'}, h('span'))),
    h('div', {class: 'actions'}, hangUpButton(call, error), ...transferControls(call, error),
      ...(call.transport === 'phone' ? [listenButton(call, error)] : []), error));
  li.addEventListener('click', () => onSelect(call.id));
  li.addEventListener('keydown', (event) => { if (event.key === 'Enter') onSelect(call.id); });
  updateCard(li, call, 0);
  return li;
}

export function updateCard(li, call, nowSeconds) {
  const state = li.querySelector('.state');
  state.textContent = call.state;
  state.dataset.state = call.state;
  li.querySelector('.turns').textContent = `${call.turns} turn${call.turns === 1 ? '' : 's'}`;
  tick(li, call, nowSeconds);
}

export function tick(li, call, nowSeconds) {
  const seconds = nowSeconds ? nowSeconds - call.started : call.duration;
  li.querySelector('.duration').textContent = duration(seconds);
}

export function setLevels(li, [caller, agent]) {
  li.querySelector('.meter.caller > span').style.transform = `scaleX(${meter(caller).toFixed(3)})`;
  li.querySelector('.meter.agent > span').style.transform = `scaleX(${meter(agent).toFixed(3)})`;
}
