// Debug console for the SSE broker. Plain JavaScript, no framework, no build step.
// Everything lives inside this one `app` object; nothing else is global.
'use strict';

const app = (() => {
  const MAX_ROWS = 500;
  const POLL_MS = 3000;
  const PULSE_MS = 5000;
  const MAX_PULSES_IN_FLIGHT = 4;
  const BUILTIN_TYPES = ['broker.gap', 'broker.replay'];

  const state = {
    tabId: `tab-${Date.now()}-${Math.random().toString(36).slice(2, 10)}`,
    connections: [],
    nextKey: 1,
    eventTypes: new Set(BUILTIN_TYPES),
    killStream: null,
    killed: false,
    pendingRows: [],
    flushTimer: null,
    received: 0,
    pulsesInFlight: 0,
    timers: { pulse: null, pulses: null, channels: null },
  };

  const $ = (id) => document.getElementById(id);

  // ---------- small helpers ----------

  function el(tag, props = {}, children = []) {
    const node = document.createElement(tag);
    Object.assign(node, props);
    for (const child of children) node.append(child);
    return node;
  }

  function statusBadge(status, text, testId) {
    const span = el('span', { className: 'status', textContent: text || status });
    span.dataset.status = status;
    if (testId) span.dataset.testid = testId;
    return span;
  }

  function parseJson(text) {
    try {
      return { ok: true, value: JSON.parse(text) };
    } catch {
      return { ok: false };
    }
  }

  function formatTime(date) {
    const pad = (n, w = 2) => String(n).padStart(w, '0');
    return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
  }

  function formatData(text) {
    const parsed = parseJson(text);
    if (parsed.ok && parsed.value !== null && typeof parsed.value === 'object') {
      return JSON.stringify(parsed.value, null, 2);
    }
    return text;
  }

  function splitChannels(text) {
    return [...new Set(text.split(/[\s,]+/).map((s) => s.trim()).filter(Boolean))];
  }

  function channelFromCursor(id) {
    return (id || '').split(',')[0].split('=')[0];
  }

  // ---------- connections ----------

  function streamUrl(conn, resumeId) {
    const params = new URLSearchParams();
    let path = `/stream/${encodeURIComponent(conn.channels[0])}`;
    if (conn.multi) {
      path = '/stream';
      for (const ch of conn.channels) params.append('channel', ch);
    }
    if (resumeId) params.set('lastEventId', resumeId);
    const query = params.toString();
    return query ? `${path}?${query}` : path;
  }

  function findConnection(channels, multi) {
    const key = channels.join(',');
    return state.connections.find((c) => c.multi === multi && c.channels.join(',') === key);
  }

  function addConnection(channels, multi) {
    const existing = findConnection(channels, multi);
    if (existing) {
      if (existing.status === 'closed') openStream(existing, 'connecting');
      return existing;
    }
    const conn = {
      key: state.nextKey++, channels, multi, es: null, status: 'closed', attempts: 0,
      lastEventId: '', replay: new Map(), attached: new Set(), retryTimer: null,
    };
    state.connections.push(conn);
    openStream(conn, 'connecting');
    return conn;
  }

  function connectFromForm(event) {
    event.preventDefault();
    if (state.killed) return;
    const channels = splitChannels($('channels-input').value);
    if (!channels.length) return;
    if ($('multi-input').checked) addConnection(channels, true);
    else channels.forEach((ch) => addConnection([ch], false));
    renderConnections();
  }

  // Closes the EventSource of an entry, so that an entry never owns two.
  function closeStream(conn) {
    clearTimeout(conn.retryTimer);
    conn.retryTimer = null;
    if (!conn.es) return;
    const es = conn.es;
    conn.es = null;
    es.onopen = es.onerror = es.onmessage = null;
    es.close();
  }

  function openStream(conn, status) {
    closeStream(conn);
    conn.replay.clear();
    conn.attached = new Set();
    conn.status = status;
    const es = new EventSource(streamUrl(conn, conn.lastEventId));
    conn.es = es;
    es.onopen = () => onOpen(conn, es);
    es.onerror = () => onError(conn, es);
    es.onmessage = (e) => onStreamEvent(conn, es, e);
    for (const type of state.eventTypes) attachType(conn, type);
    renderConnections();
  }

  function attachType(conn, type) {
    if (!conn.es || conn.attached.has(type)) return;
    const es = conn.es;
    conn.attached.add(type);
    es.addEventListener(type, (e) => onStreamEvent(conn, es, e));
  }

  function onOpen(conn, es) {
    if (conn.es !== es) return;
    conn.status = 'open';
    conn.attempts = 0;
    renderConnections();
  }

  function onError(conn, es) {
    if (conn.es !== es) return;
    conn.attempts += 1;
    conn.status = 'reconnecting';
    conn.replay.clear();
    // The browser retries by itself while CONNECTING; once CLOSED (e.g. a
    // non-200 answer) we retry ourselves, with a capped backoff.
    if (es.readyState === EventSource.CLOSED) scheduleRetry(conn);
    renderConnections();
  }

  function scheduleRetry(conn) {
    closeStream(conn);
    const delay = Math.min(30000, 2000 * 2 ** Math.min(conn.attempts - 1, 4));
    conn.retryTimer = setTimeout(() => openStream(conn, 'reconnecting'), delay);
  }

  function disconnect(conn) {
    closeStream(conn);
    conn.status = 'closed';
    conn.attempts = 0;
    renderConnections();
  }

  function reconnect(conn) {
    if (state.killed) return;
    conn.attempts = 0;
    openStream(conn, 'connecting');
  }

  function removeClosed() {
    state.connections = state.connections.filter((c) => c.status !== 'closed');
    renderConnections();
  }

  function statusText(conn) {
    if (conn.status === 'reconnecting') return `reconnecting (attempt ${conn.attempts})`;
    return conn.status;
  }

  function connectionButton(label, name, action, conn, disabled) {
    const button = el('button', { type: 'button', textContent: label, disabled });
    button.dataset.testid = `connection-${name}`;
    button.addEventListener('click', () => action(conn));
    return button;
  }

  function connectionItem(conn) {
    const name = conn.multi ? `${conn.channels.join(' + ')} (multi)` : conn.channels[0];
    const closed = conn.status === 'closed';
    const li = el('li', { className: 'connection' }, [
      el('span', { className: 'conn-name', textContent: `#${conn.key} ${name}` }),
      statusBadge(conn.status, statusText(conn), 'connection-status'),
      el('span', { className: 'conn-last muted small', textContent: conn.lastEventId ? `last id ${conn.lastEventId}` : '' }),
      el('span', { className: 'row conn-buttons' }, [
        connectionButton('Connect', 'connect', reconnect, conn, !closed || state.killed),
        connectionButton('Disconnect', 'disconnect', disconnect, conn, closed),
        connectionButton('Reconnect', 'reconnect', reconnect, conn, state.killed),
      ]),
    ]);
    li.dataset.testid = 'connection';
    li.dataset.channels = conn.channels.join(',');
    li.dataset.multi = String(conn.multi);
    li.dataset.status = conn.status;
    return li;
  }

  function renderConnections() {
    const list = $('connection-list');
    list.replaceChildren(...state.connections.map(connectionItem));
    if (!state.connections.length) {
      list.append(el('li', { className: 'muted small', textContent: 'No connections yet.' }));
    }
  }

  // ---------- incoming events ----------

  function onStreamEvent(conn, es, e) {
    if (conn.es !== es) return;
    if (e.lastEventId) conn.lastEventId = e.lastEventId;
    if (e.type === 'broker.replay') return onReplayNotice(conn, e);
    if (e.type === 'broker.gap') return onGapNotice(conn, e);
    const channel = conn.multi ? channelFromCursor(e.lastEventId) || '?' : conn.channels[0];
    const replayed = takeReplay(conn, channel);
    addRow({ channel, type: e.type, id: e.lastEventId, data: e.data, kind: replayed ? 'replayed' : 'live' });
    if ($('pulse-on-message').checked) sendPulse(channel);
    renderConnections();
  }

  function takeReplay(conn, channel) {
    const left = conn.replay.get(channel) || 0;
    if (left <= 0) return false;
    conn.replay.set(channel, left - 1);
    return true;
  }

  function onReplayNotice(conn, e) {
    const parsed = parseJson(e.data);
    const info = parsed.ok && parsed.value ? parsed.value : {};
    const channel = info.channel || conn.channels[0];
    const count = Number(info.count) || 0;
    conn.replay.set(channel, (conn.replay.get(channel) || 0) + count);
    addRow({ channel, type: e.type, id: e.lastEventId, data: `replaying ${count} missed event(s)`, kind: 'info' });
  }

  function onGapNotice(conn, e) {
    const parsed = parseJson(e.data);
    const gap = parsed.ok && parsed.value ? parsed.value : {};
    const channel = gap.channel || conn.channels[0];
    const text = `Gap: some events could not be replayed (${gap.reason || 'unknown reason'}); ` +
      `asked after ${gap.lastEventId || '—'}, resuming from ${gap.resumeFrom || '—'}`;
    addRow({ channel, type: e.type, id: e.lastEventId, data: text, kind: 'gap' });
  }

  // ---------- event log ----------

  function addRow(entry) {
    state.received += 1;
    state.pendingRows.push({ ...entry, time: new Date() });
    if (state.pendingRows.length > MAX_ROWS) state.pendingRows.splice(0, state.pendingRows.length - MAX_ROWS);
    if (!state.flushTimer) state.flushTimer = setTimeout(flushRows, 50);
  }

  function kindLabel(kind) {
    return { replayed: 'replayed', gap: '⚠ gap', info: 'info' }[kind] || '';
  }

  function rowElement(entry) {
    const typeCell = el('td', { className: 'type' }, [entry.type]);
    if (entry.kind !== 'live') {
      const mark = el('span', { className: `mark mark-${entry.kind}`, textContent: kindLabel(entry.kind) });
      mark.dataset.testid = `mark-${entry.kind}`;
      typeCell.append(' ', mark);
    }
    const tr = el('tr', { className: `row-${entry.kind}` }, [
      el('td', { className: 'time', textContent: formatTime(entry.time) }),
      el('td', { className: 'channel', textContent: entry.channel }),
      typeCell,
      el('td', { className: 'id', textContent: entry.id || '' }),
      el('td', { className: 'data' }, [el('pre', { textContent: formatData(entry.data) })]),
    ]);
    tr.dataset.testid = 'log-row';
    tr.dataset.channel = entry.channel;
    tr.dataset.kind = entry.kind;
    tr.dataset.type = entry.type;
    tr.dataset.id = entry.id || '';
    return tr;
  }

  function flushRows() {
    state.flushTimer = null;
    const rows = state.pendingRows.splice(0).reverse().map(rowElement);
    const body = $('log-body');
    const filter = currentFilter();
    rows.forEach((tr) => applyFilterToRow(tr, filter));
    body.prepend(...rows);
    while (body.rows.length > MAX_ROWS) body.lastElementChild.remove();
    renderLogCount();
  }

  function currentFilter() {
    return {
      channels: splitChannels($('filter-channel').value.toLowerCase()),
      text: $('filter-text').value.trim().toLowerCase(),
    };
  }

  function applyFilterToRow(tr, filter = currentFilter()) {
    const channelOk = !filter.channels.length || filter.channels.includes(tr.dataset.channel.toLowerCase());
    const textOk = !filter.text || tr.textContent.toLowerCase().includes(filter.text);
    tr.hidden = !(channelOk && textOk);
  }

  function applyFilter() {
    const filter = currentFilter();
    for (const tr of $('log-body').rows) applyFilterToRow(tr, filter);
    renderLogCount();
  }

  function clearLog() {
    state.pendingRows = [];
    $('log-body').replaceChildren();
    renderLogCount();
  }

  function renderLogCount() {
    const rows = [...$('log-body').rows];
    const shown = rows.filter((r) => !r.hidden).length;
    $('log-count').textContent = `${shown} shown, ${rows.length} kept (max ${MAX_ROWS}), ${state.received} received`;
  }

  // ---------- event types ----------

  function addEventType(type) {
    const t = type.trim();
    if (!t || t === 'message' || state.eventTypes.has(t)) return;
    state.eventTypes.add(t);
    state.connections.forEach((conn) => attachType(conn, t));
    renderTypes();
  }

  function onTypesSubmit(event) {
    event.preventDefault();
    splitChannels($('types-input').value).forEach(addEventType);
    $('types-input').value = '';
  }

  function renderTypes() {
    $('types-list').textContent = ['message (untyped)', ...state.eventTypes].join(', ');
  }

  // ---------- publish ----------

  function updateJsonHint() {
    const body = $('publish-body').value;
    const hint = $('json-hint');
    const parsed = body.trim() ? parseJson(body) : { ok: false };
    hint.dataset.valid = String(parsed.ok);
    if (!body.trim()) hint.textContent = 'Empty body: will be sent as text/plain.';
    else if (parsed.ok) hint.textContent = '✓ Valid JSON: will be sent as application/json.';
    else hint.textContent = '✗ Not JSON: will be sent as text/plain.';
  }

  async function readAnswer(res) {
    const text = await res.text();
    const parsed = parseJson(text);
    return { status: res.status, ok: res.ok, text, body: parsed.ok ? parsed.value : null };
  }

  function describeAnswer(answer) {
    const b = answer.body || {};
    if (answer.ok && b.id) return `Published ${b.id} to ${b.channel} (${b.subscribers} subscriber(s))`;
    if (answer.ok) return `OK (${answer.status})`;
    if (b.title) return `Error ${b.status || answer.status}: ${b.title}${b.detail ? ` — ${b.detail}` : ''}`;
    return `Error ${answer.status}: ${answer.text || 'no detail'}`;
  }

  function showResult(node, ok, text, raw) {
    node.dataset.ok = String(ok);
    node.replaceChildren(el('strong', { textContent: text }));
    if (raw) node.append(el('pre', { className: 'small', textContent: raw }));
  }

  async function publish(event) {
    event.preventDefault();
    const channel = $('publish-channel').value.trim();
    const type = $('publish-event').value.trim();
    const body = $('publish-body').value;
    if (type) addEventType(type);
    const isJson = body.trim() !== '' && parseJson(body).ok;
    const url = `/publish/${encodeURIComponent(channel)}${type ? `?event=${encodeURIComponent(type)}` : ''}`;
    const node = $('publish-result');
    try {
      const res = await fetch(url, {
        method: 'POST', body, headers: { 'Content-Type': isJson ? 'application/json' : 'text/plain' },
      });
      const answer = await readAnswer(res);
      showResult(node, answer.ok, describeAnswer(answer), answer.text);
    } catch (err) {
      showResult(node, false, `Network error: ${err.message}`);
    }
  }

  // ---------- pulses ----------

  async function sendPulse(channel) {
    if (state.killed || state.pulsesInFlight >= MAX_PULSES_IN_FLIGHT) return;
    state.pulsesInFlight += 1;
    const body = channel ? { clientId: state.tabId, channel } : state.tabId;
    try {
      await fetch('/pulse', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
    } catch {
      // the broker may be restarting; the next pulse will try again
    } finally {
      state.pulsesInFlight -= 1;
    }
  }

  function updatePulseTimer() {
    clearInterval(state.timers.pulse);
    state.timers.pulse = null;
    if (!$('pulse-interval').checked || state.killed) return;
    sendPulse();
    state.timers.pulse = setInterval(() => sendPulse(), PULSE_MS);
  }

  function pulseRow(p) {
    const self = p.tabId === state.tabId;
    const lastSeen = p.lastSeen ? formatTime(new Date(p.lastSeen)) : '—';
    const idCell = el('td', { className: 'tab' }, [p.tabId]);
    if (self) idCell.append(' ', el('span', { className: 'mark mark-self', textContent: 'this tab' }));
    const tr = el('tr', { className: self ? 'self' : '' }, [
      idCell,
      el('td', { textContent: String(p.count ?? '') }),
      el('td', { textContent: lastSeen, title: p.lastSeen || '' }),
      el('td', {}, [statusBadge(p.alive ? 'alive' : 'stale', p.alive ? 'alive' : 'stale', 'pulse-state')]),
    ]);
    tr.dataset.testid = 'pulse-row';
    tr.dataset.tabId = p.tabId;
    tr.dataset.self = String(self);
    return tr;
  }

  // ---------- polled tables ----------

  async function fetchJson(url) {
    const res = await fetch(url, { cache: 'no-store' });
    if (!res.ok) {
      const err = new Error(`${url}: HTTP ${res.status}`);
      err.status = res.status;
      throw err;
    }
    return res.json();
  }

  // What a failed poll tells the reader: with auth on, listings and the
  // pulse book need a token with the monitor grant in the sse_token cookie.
  function pollFailure(err) {
    if (err.status === 401 || err.status === 403) {
      return 'needs a token with the monitor grant (sse_token cookie)';
    }
    return 'broker unreachable';
  }

  async function refreshTable(url, bodyId, updatedId, toRow) {
    const updated = $(updatedId);
    try {
      const list = await fetchJson(url);
      $(bodyId).replaceChildren(...(Array.isArray(list) ? list : []).map(toRow));
      updated.textContent = `updated ${formatTime(new Date())}`;
      updated.dataset.ok = 'true';
    } catch (err) {
      updated.textContent = pollFailure(err);
      updated.dataset.ok = 'false';
    }
  }

  function channelRow(c) {
    const tr = el('tr', {}, [
      el('td', { textContent: c.name }),
      el('td', { textContent: String(c.subscribers ?? '') }),
      el('td', { textContent: String(c.published ?? '') }),
      el('td', { className: 'id', textContent: c.lastEventId || '—' }),
    ]);
    tr.dataset.testid = 'channel-row';
    tr.dataset.channel = c.name;
    return tr;
  }

  const refreshPulses = () => refreshTable('/pulses', 'pulses-body', 'pulses-updated', pulseRow);
  const refreshChannels = () => refreshTable('/channels', 'channels-body', 'channels-updated', channelRow);

  function startPolling() {
    refreshPulses();
    refreshChannels();
    state.timers.pulses = setInterval(refreshPulses, POLL_MS);
    state.timers.channels = setInterval(refreshChannels, POLL_MS);
  }

  // ---------- kill session ----------

  function setKillStatus(status, text) {
    const node = $('kill-status');
    node.dataset.status = status;
    node.textContent = text || status;
  }

  function openKillStream() {
    const es = new EventSource(`/stream/${encodeURIComponent('killSession')}`);
    state.killStream = es;
    es.onopen = () => setKillStatus('open', 'listening');
    es.onerror = () => setKillStatus('reconnecting', es.readyState === EventSource.CLOSED ? 'closed' : 'reconnecting');
    es.onmessage = (e) => {
      if (killTarget(e.data) === state.tabId) killTab();
    };
  }

  function killTarget(data) {
    const parsed = parseJson(data);
    return parsed.ok && typeof parsed.value === 'string' ? parsed.value : String(data).trim();
  }

  function killTab() {
    state.killed = true;
    state.connections.forEach(disconnect);
    if (state.killStream) {
      state.killStream.onerror = null;
      state.killStream.close();
      state.killStream = null;
    }
    updatePulseTimer();
    setKillStatus('killed', 'killed');
    $('killed-banner').hidden = false;
    document.body.classList.add('killed');
    $('connect').disabled = true;
    renderConnections();
  }

  async function requestKill(url, body) {
    const node = $('kill-result');
    try {
      const init = { method: 'DELETE' };
      if (body !== undefined) Object.assign(init, { body: JSON.stringify(body), headers: { 'Content-Type': 'application/json' } });
      const answer = await readAnswer(await fetch(url, init));
      showResult(node, answer.ok, answer.ok ? `${url}: accepted (${answer.status})` : describeAnswer(answer), answer.text);
    } catch (err) {
      showResult(node, false, `Network error: ${err.message}`);
    }
  }

  // ---------- wiring ----------

  function bind(id, type, handler) {
    $(id).addEventListener(type, handler);
  }

  // The channels to subscribe to on load: `?channels=a,b` (empty: none),
  // else the form's default (`test`, where the demo publishes).
  function initialChannels() {
    const params = new URLSearchParams(window.location.search);
    if (!params.has('channels')) return splitChannels($('channels-input').value);
    const channels = splitChannels(params.get('channels'));
    if (channels.length) $('channels-input').value = channels.join(', ');
    return channels;
  }

  function init() {
    $('tab-id').textContent = state.tabId;
    document.title = `SSE console – ${state.tabId}`;
    bind('connect-form', 'submit', connectFromForm);
    bind('disconnect-all', 'click', () => state.connections.forEach(disconnect));
    bind('reconnect-all', 'click', () => state.connections.forEach(reconnect));
    bind('remove-closed', 'click', removeClosed);
    bind('types-form', 'submit', onTypesSubmit);
    bind('publish-form', 'submit', publish);
    bind('publish-body', 'input', updateJsonHint);
    bind('filter-channel', 'input', applyFilter);
    bind('filter-text', 'input', applyFilter);
    bind('log-clear', 'click', clearLog);
    bind('pulse-interval', 'change', updatePulseTimer);
    bind('kill-tab', 'click', () => requestKill('/killSession', state.tabId));
    bind('kill-all', 'click', () => requestKill('/killall'));
    renderConnections();
    renderTypes();
    updateJsonHint();
    renderLogCount();
    openKillStream();
    updatePulseTimer();
    startPolling();
    initialChannels().forEach((ch) => addConnection([ch], false));
  }

  init();
  return { state, addConnection, disconnect, reconnect, addEventType, sendPulse };
})();
