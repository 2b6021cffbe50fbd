/*
 * Sophia dashboard - the live view served at `/`.
 *
 * One WebSocket to /ws carries everything: pushed `metric` and `alert`
 * updates for the dashboard named in the URL (`/?dashboard=executive`,
 * default "default"), and a `stats` request polled every STATS_MS for the
 * system panel (the same document as GET /api/stats, without needing the
 * API's bearer token).
 *
 * Design:
 * - Messages only change plain data (bounded ring buffers per metric, a
 *   bounded alert list, the latest stats) and mark what changed; the DOM is
 *   touched once per animation frame, for what changed only. At 1,000
 *   updates/s that is ~16 updates folded into one repaint per frame, and a
 *   hidden tab (no frames) only keeps the bounded data.
 * - Every topic's last seen `seq` is kept across reconnects. After a drop
 *   the page resubscribes with `since` so the server replays what was
 *   missed; `resync` for a topic means the server cannot (history aged out,
 *   or it restarted), so that topic's state is cleared and rebuilt from a
 *   `history` request (what the server still holds), with live messages
 *   that arrive meanwhile held back and applied after it, in seq order.
 * - Opening shows the current values at once: a topic without a seq yet
 *   (first connect) is built the same way, and the metric topic also asks
 *   `latest` - the server's last update of each metric of the dashboard,
 *   kept after the history has aged out - so a metric that has not moved
 *   for an hour still has its tile. History gives the sparklines; a
 *   metric's newest value wins whichever of the two it came from.
 * - The picker lists GET /api/dashboards (those with data) and switches by
 *   loading `?dashboard=<id>`; where the API wants a token the page does
 *   not have, it shows the current dashboard only.
 * - Reconnects back off exponentially (with jitter) up to BACKOFF_MAX_MS.
 * - Auth: `?token=` in the page URL, or the token field, which appears when
 *   the server closes with 4001 or answers `unauthorized`. The token goes
 *   in an `auth` message, the first on each connection (not in the socket
 *   URL, which proxies log, and whose refusal a browser cannot read), and
 *   is kept in sessionStorage for this tab only.
 * - An alert update with data.state "resolved" (host->alert_ex with
 *   resolve, the metrics processor's thresholds) is not a new alert: it
 *   marks the firing alert it ends - same alert_id, or for one raised
 *   without an id the same alert_type and metric - as resolved, and the
 *   severity counts then count only what still fires. A resolution that
 *   matches nothing shown (its alert fell out of the feed or the history)
 *   changes nothing.
 * - Server text is only ever set with textContent, never parsed as HTML.
 */
(() => {
  'use strict';

  const SPARK_POINTS = 120;   // per metric
  const MAX_METRICS = 200;    // tiles; later names are counted, not shown
  const MAX_ALERTS = 100;     // feed length
  const STATS_MS = 1500;
  const STATS_TIMEOUT_MS = 5000;
  const HISTORY_TIMEOUT_MS = 5000;
  const MAX_HELD = 1000;      // live messages held per topic during a rebuild
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 10000;
  const CLOSE_UNAUTHORIZED = 4001;
  const TOKEN_KEY = 'sophia.token';

  const params = new URLSearchParams(location.search);
  const dashboard = params.get('dashboard') || 'default';
  const metricTopic = 'dashboard:' + dashboard;
  const alertTopic = 'alerts';
  const subscriptions = [metricTopic, alertTopic];

  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const SVGNS = 'http://www.w3.org/2000/svg';

  /* ------------------------------------------------------------- state */

  const series = new Map();       // metric name -> series
  const dirtySeries = new Set();
  const hiddenMetrics = new Set(); // names beyond MAX_METRICS (counted up to 10k)
  const alerts = [];              // newest first, at most MAX_ALERTS
  let alertsDirty = false;
  let alertsCleared = false;
  const resolvedUnrendered = new Set(); // alerts resolved since the last frame
  const sevCounts = new Map();
  const lastSeq = new Map();      // topic -> last seq seen (any connection)
  const rebuilding = new Map();   // topic -> {id, latestId, history, latest, held: [live messages], timer}
  let stats = null;
  let statsAt = 0;
  let statsDirty = false;
  let statsError = '';
  let conn = { state: 'connecting', text: 'connecting' };
  let connDirty = true;
  let notice = '';
  let noticeDirty = false;
  let received = 0;               // messages, for the updates/s figure
  let frame = 0;
  const perf = { frames: 0, messages: 0, renderMs: 0, maxRenderMs: 0 };

  // sessionStorage throws where storage is disabled: then the token lives
  // in this page only.
  const store = {
    get() {
      try {
        return sessionStorage.getItem(TOKEN_KEY) || '';
      } catch {
        return '';
      }
    },
    set(v) {
      try {
        sessionStorage.setItem(TOKEN_KEY, v);
      } catch {
        /* kept in memory only */
      }
    },
  };
  let token = params.get('token') || store.get();
  let ws = null;
  let backoff = BACKOFF_MIN_MS;
  let retryTimer = 0;
  let statsTimer = 0;
  let statsPending = null;        // {id, at}
  let requestId = 0;
  let failedHandshakes = 0;
  let needAuth = false;
  let refusalShown = false;
  let paused = false;             // test hook: stay disconnected

  function schedule() {
    if (!frame) frame = requestAnimationFrame(render);
  }

  /* ----------------------------------------------------------- metrics */

  function newSeries(name) {
    return {
      name,
      values: new Float64Array(SPARK_POINTS),
      head: 0,         // next write position
      count: 0,
      last: NaN,
      prev: NaN,
      timestamp: '',
      total: 0,        // points seen since the tile was created
      tile: null,
    };
  }

  function onMetric(m) {
    const d = m.data;
    if (!d || typeof d.metric !== 'string') return;
    const v = typeof d.value === 'number' ? d.value : Number(d.value);
    if (!Number.isFinite(v)) return;
    let s = series.get(d.metric);
    if (!s) {
      if (series.size >= MAX_METRICS) {
        if (hiddenMetrics.size < 10000) hiddenMetrics.add(d.metric);
        return;
      }
      s = newSeries(d.metric);
      series.set(d.metric, s);
    }
    s.values[s.head] = v;
    s.head = (s.head + 1) % SPARK_POINTS;
    if (s.count < SPARK_POINTS) s.count++;
    s.prev = s.last;
    s.last = v;
    s.total++;
    s.timestamp = typeof d.timestamp === 'string' ? d.timestamp : '';
    dirtySeries.add(s);
    schedule();
  }

  function clearMetrics() {
    for (const s of series.values()) if (s.tile) s.tile.root.remove();
    series.clear();
    dirtySeries.clear();
    hiddenMetrics.clear();
    schedule();
  }

  const numberFmt = new Intl.NumberFormat('en-US', { maximumFractionDigits: 2 });
  const compactFmt = new Intl.NumberFormat('en-US', { notation: 'compact', maximumFractionDigits: 1 });

  function fmt(v) {
    if (!Number.isFinite(v)) return '–';
    return Math.abs(v) >= 1e12 ? compactFmt.format(v) : numberFmt.format(v);
  }

  function makeTile(s) {
    const root = el('div', 'tile');
    root.dataset.metric = s.name;
    const name = el('div', 'name', s.name);
    name.title = s.name;
    const value = el('div', 'value');
    const svg = document.createElementNS(SVGNS, 'svg');
    svg.setAttribute('viewBox', `0 0 ${SPARK_POINTS - 1} 40`);
    svg.setAttribute('preserveAspectRatio', 'none');
    svg.setAttribute('aria-hidden', 'true');
    const area = document.createElementNS(SVGNS, 'polygon');
    area.setAttribute('class', 'area');
    const line = document.createElementNS(SVGNS, 'polyline');
    line.setAttribute('class', 'line');
    svg.append(area, line);
    const foot = el('div', 'foot');
    const range = el('span', 'range');
    const when = el('span', 'when');
    foot.append(range, when);
    root.append(name, value, svg, foot);
    $('tiles').append(root);
    return { root, value, area, line, range, when };
  }

  // Oldest to newest, stretched over the 0..SPARK_POINTS-1 x 0..40 viewBox
  // (a little vertical margin so extremes are not cut by the edge); a
  // single point or a constant series is a flat line across the middle.
  function drawSpark(s) {
    const t = s.tile;
    const n = s.count;
    const start = (s.head - n + SPARK_POINTS) % SPARK_POINTS;
    let min = Infinity;
    let max = -Infinity;
    for (let i = 0; i < n; i++) {
      const v = s.values[(start + i) % SPARK_POINTS];
      if (v < min) min = v;
      if (v > max) max = v;
    }
    const span = max - min || 1;
    const W = SPARK_POINTS - 1;
    const pts = new Array(n);
    for (let i = 0; i < n; i++) {
      const v = s.values[(start + i) % SPARK_POINTS];
      const y = max === min ? 20 : 37 - ((v - min) / span) * 34;
      pts[i] = `${n > 1 ? ((i * W) / (n - 1)).toFixed(2) : 0},${y.toFixed(2)}`;
    }
    if (n === 1) pts.push(`${W},20`);
    const line = pts.join(' ');
    t.line.setAttribute('points', line);
    t.area.setAttribute('points', `0,40 ${line} ${W},40`);
    t.range.textContent = n > 1 ? `${fmt(min)} – ${fmt(max)}` : '';
  }

  function renderSeries(s) {
    if (!s.tile) s.tile = makeTile(s);
    const t = s.tile;
    t.value.textContent = fmt(s.last);
    t.value.className = 'value' + (s.last > s.prev ? ' up' : s.last < s.prev ? ' down' : '');
    t.root.dataset.value = String(s.last);
    t.root.dataset.points = String(s.count);
    drawSpark(s);
    t.when.textContent = timeOf(s.timestamp);
    t.when.title = s.timestamp;
  }

  /* ------------------------------------------------------------ alerts */

  const SEVERITIES = ['critical', 'error', 'warning', 'info'];

  function sevClass(sev) {
    return SEVERITIES.includes(sev) ? sev : 'other';
  }

  const str = (v) => (typeof v === 'string' ? v : '');

  // What pairs a resolution with the alert it ends: the alert_id, else
  // (an alert raised without one) its type, metric and dashboard.
  function alertKey(d) {
    if (str(d.alert_id)) return 'id\u0000' + d.alert_id;
    return ['type', str(d.alert_type), str(d.metric), str(d.dashboard_id)].join('\u0000');
  }

  function onAlert(m) {
    const d = m.data || {};
    if (d.state === 'resolved') {
      onResolved(d);
      return;
    }
    const a = {
      severity: typeof d.severity === 'string' ? d.severity : 'info',
      type: str(d.alert_type),
      message: typeof d.message === 'string' ? d.message : JSON.stringify(d),
      key: alertKey(d),
      id: str(d.alert_id),
      at: new Date(),
      resolvedAt: null,
      node: null,
    };
    alerts.unshift(a);
    sevCounts.set(a.severity, (sevCounts.get(a.severity) || 0) + 1);
    if (alerts.length > MAX_ALERTS) {
      const old = alerts.pop(); // its node, if any, goes in renderAlerts
      if (!old.resolvedAt) sevCounts.set(old.severity, sevCounts.get(old.severity) - 1);
      resolvedUnrendered.delete(old);
    }
    alertsDirty = true;
    schedule();
  }

  // The newest alert still firing under the same key is marked resolved.
  function onResolved(d) {
    const key = alertKey(d);
    const a = alerts.find((x) => !x.resolvedAt && x.key === key);
    if (!a) return;
    a.resolvedAt = new Date();
    sevCounts.set(a.severity, sevCounts.get(a.severity) - 1);
    if (a.node) resolvedUnrendered.add(a);
    alertsDirty = true;
    schedule();
  }

  function clearAlerts() {
    alerts.length = 0;
    resolvedUnrendered.clear();
    sevCounts.clear();
    alertsCleared = true;
    alertsDirty = true;
    schedule();
  }

  function alertNode(a) {
    const li = el('li', 'alert sev-' + sevClass(a.severity));
    li.dataset.severity = a.severity;
    li.dataset.state = 'firing';
    if (a.id) li.dataset.alertId = a.id;
    li.append(el('span', 'sev', a.severity), el('span', 'msg', a.message),
      el('span', 'time', a.at.toLocaleTimeString('en-GB')));
    if (a.type) li.append(el('span', 'type', a.type));
    if (a.resolvedAt) markResolved(a, li);
    return li;
  }

  function markResolved(a, li) {
    li.classList.add('resolved');
    li.dataset.state = 'resolved';
    li.append(el('span', 'state', 'resolved ' + a.resolvedAt.toLocaleTimeString('en-GB')));
  }

  function renderAlerts() {
    const list = $('alerts');
    if (alertsCleared) {
      list.replaceChildren();
      alertsCleared = false;
    }
    // New alerts are the ones without a node, all at the front.
    const fresh = document.createDocumentFragment();
    for (const a of alerts) {
      if (a.node) break;
      a.node = alertNode(a);
      fresh.append(a.node);
    }
    list.prepend(fresh);
    for (const a of resolvedUnrendered) markResolved(a, a.node);
    resolvedUnrendered.clear();
    // The list mirrors `alerts`, newest first: what is past its end fell
    // off the bounded array.
    while (list.childElementCount > alerts.length) list.lastElementChild.remove();
    $('alerts-empty').hidden = alerts.length > 0;
    const counts = $('alert-counts');
    counts.replaceChildren();
    for (const sev of [...SEVERITIES, ...[...sevCounts.keys()].filter((k) => !SEVERITIES.includes(k))]) {
      const n = sevCounts.get(sev);
      if (n) counts.append(el('span', 'sevcount sev-' + sevClass(sev), `${n} ${sev}`));
    }
  }

  /* ------------------------------------------------------------- stats */

  function requestStats() {
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    if (statsPending && performance.now() - statsPending.at < STATS_TIMEOUT_MS) return;
    const id = 'stats-' + ++requestId;
    statsPending = { id, at: performance.now() };
    send({ type: 'request', id, method: 'stats' });
  }

  // Fallback when the socket may not ask for stats: GET /api/stats, which
  // works when the API is open (no server.tokens).
  async function fetchStats(why) {
    try {
      const res = await fetch('api/stats', { cache: 'no-store' });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      onStats(await res.json());
    } catch (err) {
      statsError = `stats unavailable (${why}; /api/stats: ${err.message})`;
      statsDirty = true;
      schedule();
    }
  }

  function onStats(data) {
    stats = data;
    statsAt = Date.now();
    statsError = '';
    statsDirty = true;
    schedule();
  }

  function setText(id, text) {
    const e = $(id);
    if (e.textContent !== text) e.textContent = text;
  }

  function cell(text, cls) {
    return el('td', cls, text);
  }

  function num(text, bad) {
    return el('td', bad ? 'num bad' : 'num', text);
  }

  function pct(x) {
    return Number.isFinite(x) ? (x * 100).toFixed(1) + '%' : '–';
  }

  // One row per tier (l1, l2, l3: the other cache keys are loader and
  // write-back counters). No lookups yet is '–', not 0%.
  function renderCache(cache) {
    const box = $('cache');
    box.replaceChildren();
    for (const [tier, t] of Object.entries(cache || {})) {
      if (!/^l\d$/.test(tier) || !t || typeof t !== 'object') continue;
      const row = el('div', 'tier');
      row.dataset.tier = tier;
      const status = typeof t.status === 'string' ? t.status : '';
      const hits = Number(t.hits);
      const misses = Number(t.misses);
      let rate = Number(t.hit_rate);
      if (!Number.isFinite(rate) && hits + misses > 0) rate = hits / (hits + misses);
      if (status === 'down') row.classList.add('down');
      else if (status === 'disabled') row.classList.add('off');
      const lookups = hits + misses;
      const shown = status !== 'disabled' && Number.isFinite(rate) && !(lookups === 0);
      const bar = el('div', 'bar');
      const fill = el('span');
      fill.style.width = shown ? (rate * 100).toFixed(1) + '%' : '0';
      bar.append(fill);
      row.append(el('span', 'tname', tier.toUpperCase()), bar,
        el('span', 'rate', status === 'disabled' ? 'off' : shown ? pct(rate) : '–'));
      const parts = [];
      if (status) parts.push(status);
      if (status !== 'disabled') {
        if (Number.isFinite(hits)) parts.push(`${fmt(hits)} hits`);
        if (Number.isFinite(misses)) parts.push(`${fmt(misses)} misses`);
        if (Number.isFinite(Number(t.entries))) parts.push(`${fmt(Number(t.entries))} entries`);
        if (lookups > 0 && Number.isFinite(Number(t.p99_us))) parts.push(`p99 ${fmt(Number(t.p99_us))} µs`);
      }
      if (typeof t.error === 'string' && t.error) parts.push(t.error);
      row.append(el('span', 'detail', parts.join(' · ')));
      box.append(row);
    }
  }

  function renderStreams(streams) {
    const body = $('streams').tBodies[0];
    body.replaceChildren();
    for (const [name, s] of Object.entries(streams || {})) {
      const tr = el('tr');
      tr.dataset.stream = name;
      tr.append(cell(name), num(Number(s.rate).toFixed(1)), num(fmt(s.received)),
        num(fmt(s.processed)), num(fmt(s.failed), s.failed > 0),
        num(fmt(s.dropped), s.dropped > 0),
        num(`${fmt(s.queued)}/${fmt(s.capacity)}`), num(`${fmt(s.lag_ms)} ms`),
        replayCell(s.replay));
      body.append(tr);
    }
  }

  // The stream's last replay (POST /api/streams/{name}/replay): state,
  // progress and where the events go; the rest in the tooltip.
  function replayCell(r) {
    if (!r) return cell('');
    const where = r.dry_run ? 'dry run' : `→ ${r.target}`;
    const c = cell(`${r.state} ${fmt(r.done)}/${fmt(r.total)} ${where}`,
      r.state === 'failed' ? 'bad' : '');
    c.classList.add('replay');
    c.dataset.state = r.state;
    c.title = `from ${r.from} to ${r.to} at ${r.rate}/s: applied ${r.applied}, ` +
      `dropped ${r.dropped}, filtered ${r.filtered}, failed ${r.failed}` +
      (r.error ? ` (${r.error})` : '');
    return c;
  }

  function renderPlugins(plugins) {
    const body = $('plugins').tBodies[0];
    body.replaceChildren();
    for (const p of plugins || []) {
      const tr = el('tr');
      tr.dataset.plugin = p.name;
      const loaded = p.loaded_at ? new Date(p.loaded_at * 1000).toLocaleTimeString('en-GB') : '–';
      tr.append(cell(p.name), cell(p.plugin || ''), cell(p.kind || ''), cell(p.version || ''),
        num(String(p.reload_count ?? 0)), num(loaded));
      tr.cells[5].title = p.file || '';
      body.append(tr);
    }
  }

  function renderStats() {
    setText('stats-age', statsError);
    if (!stats) return;
    const w = stats.websocket || {};
    setText('ws-connections', fmt(w.connections));
    setText('ws-subscriptions', fmt(w.subscriptions));
    setText('ws-messages-out', fmt(w.messages_out));
    setText('ws-dropped', fmt(w.dropped));
    setText('ws-recovered', fmt(w.recovered));
    renderCache(stats.cache);
    renderStreams(stats.streams);
    renderPlugins(stats.plugins);
    const r = stats.reload || {};
    setText('reloads', `${fmt(r.reloads ?? 0)} reloads, ${fmt(r.failures ?? 0)} failed`);
    setText('server-meta', `v${stats.version || '?'} · up ${duration(stats.uptime_s)}`);
  }

  /* ------------------------------------------------------------ render */

  function timeOf(ts) {
    const d = ts ? new Date(ts) : null;
    return d && !Number.isNaN(d.getTime()) ? d.toLocaleTimeString('en-GB') : '';
  }

  function duration(s) {
    s = Number(s) || 0;
    if (s < 120) return `${s}s`;
    if (s < 7200) return `${Math.floor(s / 60)}m`;
    return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}`;
  }

  function render() {
    frame = 0;
    const t0 = performance.now();
    perf.frames++;
    if (connDirty) {
      const c = $('conn');
      c.dataset.state = conn.state;
      c.textContent = conn.text;
      $('auth').hidden = !needAuth;
      connDirty = false;
    }
    if (noticeDirty) {
      $('notice').textContent = notice;
      $('notice').hidden = !notice;
      noticeDirty = false;
    }
    if (dirtySeries.size) {
      for (const s of dirtySeries) renderSeries(s);
      dirtySeries.clear();
    }
    setText('metric-count', series.size ? `${series.size}${hiddenMetrics.size ? ` (+${hiddenMetrics.size} not shown)` : ''}` : '');
    $('tiles-empty').hidden = series.size > 0;
    if (alertsDirty) {
      renderAlerts();
      alertsDirty = false;
    }
    if (statsDirty) {
      renderStats();
      statsDirty = false;
    }
    const ms = performance.now() - t0;
    perf.renderMs += ms;
    if (ms > perf.maxRenderMs) perf.maxRenderMs = ms;
  }

  function setConn(state, text) {
    if (conn.state === state && conn.text === (text || state)) return;
    conn = { state, text: text || state };
    connDirty = true;
    schedule();
  }

  function setNotice(text) {
    notice = text;
    noticeDirty = true;
    schedule();
  }

  setInterval(() => {
    setText('rate', fmt(received));
    received = 0;
    if (stats) setText('stats-age', statsError || `updated ${Math.round((Date.now() - statsAt) / 1000)}s ago`);
  }, 1000);

  /* -------------------------------------------------------- connection */

  function wsUrl() {
    const u = new URL('ws', location.href);
    u.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    u.search = '';
    u.hash = '';
    return u.href;
  }

  function send(obj) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(obj));
  }

  function subscribe() {
    const msg = { type: 'subscribe', subscriptions };
    const since = {};
    for (const t of subscriptions) if (lastSeq.has(t)) since[t] = lastSeq.get(t);
    if (Object.keys(since).length) msg.since = since;
    send(msg);
  }

  // resync: what the page shows for `topic` may have gaps the server
  // cannot fill by replay, so start over from what it still holds: the
  // newest `limit` messages up to `seq` (the topic's seq now; unknown on
  // opening, then from the oldest held), and for the metric topic each
  // metric's latest update.
  function resync(topic, seq) {
    if (!subscriptions.includes(topic)) return;
    lastSeq.delete(topic);
    if (topic === metricTopic) clearMetrics();
    else clearAlerts();
    const old = rebuilding.get(topic);
    if (old) clearTimeout(old.timer);
    const id = 'history-' + ++requestId;
    const r = {
      id, latestId: null, history: null, latest: null, held: [],
      timer: setTimeout(() => endRebuild(topic), HISTORY_TIMEOUT_MS),
    };
    rebuilding.set(topic, r);
    const limit = topic === metricTopic ? 1000 : MAX_ALERTS;
    const since = Number.isFinite(seq) ? Math.max(0, seq - limit) : 0;
    send({ type: 'request', id, method: 'history', params: { topic, since, limit: Number.isFinite(seq) ? limit : 1000 } });
    if (topic === metricTopic) {
      r.latestId = 'latest-' + ++requestId;
      send({ type: 'request', id: r.latestId, method: 'latest', params: { topic } });
    }
  }

  // One of a rebuild's answers (null: refused); the rebuild ends once all
  // are in.
  function rebuildAnswer(r, topic, id, data) {
    const part = { messages: Array.isArray(data?.messages) ? data.messages : [], seq: Number(data?.seq) };
    if (id === r.id) r.history = part;
    else r.latest = part;
    if (r.history && (r.latest || !r.latestId)) endRebuild(topic);
  }

  // Applies the history, then each metric's latest update where it is
  // newer than what the history showed of that metric, then the live
  // messages held meanwhile that are newer than both.
  function endRebuild(topic) {
    const r = rebuilding.get(topic);
    if (!r) return;
    clearTimeout(r.timer);
    rebuilding.delete(topic);
    let upto = -1;
    const shown = new Map(); // metric -> seq shown
    for (const m of r.history?.messages || []) {
      if (!m || typeof m !== 'object') continue;
      apply(m);
      if (Number.isFinite(m.seq)) {
        upto = Math.max(upto, m.seq);
        if (typeof m.data?.metric === 'string') shown.set(m.data.metric, m.seq);
      }
    }
    for (const m of r.latest?.messages || []) {
      if (!m || typeof m !== 'object' || m.type !== 'metric' || !Number.isFinite(m.seq)) continue;
      const name = m.data?.metric;
      if (!(shown.get(name) >= m.seq)) onMetric(m); // not apply: an older seq must not become lastSeq
      upto = Math.max(upto, m.seq);
    }
    // Everything up to the topic's seq at the answer is shown above.
    for (const part of [r.history, r.latest]) if (part && part.seq > 0) upto = Math.max(upto, part.seq);
    if (upto > 0 && !(lastSeq.get(topic) >= upto)) lastSeq.set(topic, upto);
    for (const m of r.held) if (!(m.seq <= upto)) apply(m);
  }

  function onMessage(m) {
    received++;
    perf.messages++;
    const r = typeof m.topic === 'string' ? rebuilding.get(m.topic) : undefined;
    if (r && m.type !== 'resync') {
      if (r.held.length < MAX_HELD) r.held.push(m);
      return;
    }
    apply(m);
  }

  function apply(m) {
    if (typeof m.topic === 'string' && Number.isFinite(m.seq)) lastSeq.set(m.topic, m.seq);
    switch (m.type) {
      case 'metric':
        onMetric(m);
        break;
      case 'alert':
        onAlert(m);
        break;
      case 'subscribed':
        setConn('live');
        if (refusalShown) {
          refusalShown = false;
          setNotice('');
        }
        break;
      case 'resync':
        if (typeof m.topic === 'string') resync(m.topic, m.seq);
        break;
      case 'response':
        onResponse(m);
        break;
      case 'error':
        onError(m);
        break;
      default:
        break; // notification, data, pong: not shown here
    }
  }

  function onResponse(m) {
    if (statsPending && m.id === statsPending.id) {
      statsPending = null;
      if (m.data) onStats(m.data);
      return;
    }
    for (const [topic, r] of rebuilding) {
      if (r.id === m.id || r.latestId === m.id) {
        rebuildAnswer(r, topic, m.id, m.data);
        return;
      }
    }
  }

  function onError(m) {
    const e = m.error || {};
    const rebuild = [...rebuilding].find(([, r]) => m.id && (r.id === m.id || r.latestId === m.id));
    if (rebuild) {
      rebuildAnswer(rebuild[1], rebuild[0], m.id, null); // refused: what the other gives, and live updates
    } else if (e.code === 'unauthorized') {
      askToken(e.message || 'the server wants a token');
    } else if (statsPending && m.id === statsPending.id) {
      statsPending = null;
      fetchStats(e.message || e.code || 'refused');
    } else {
      setNotice(`server: ${e.code || 'error'}: ${e.message || ''}`);
    }
  }

  function askToken(why) {
    needAuth = true;
    $('auth-why').textContent = token ? `token refused: ${why}` : why;
    setConn('auth', 'token needed');
    connDirty = true;
    schedule();
  }

  function startStats() {
    stopStats();
    requestStats();
    statsTimer = setInterval(requestStats, STATS_MS);
  }

  function stopStats() {
    clearInterval(statsTimer);
    statsTimer = 0;
    statsPending = null;
  }

  function connect() {
    clearTimeout(retryTimer);
    retryTimer = 0;
    if (paused) return;
    if (conn.state === 'reconnecting') setConn('reconnecting', 'reconnecting…');
    let opened = false;
    const sock = new WebSocket(wsUrl());
    ws = sock;
    sock.onopen = () => {
      opened = true;
      failedHandshakes = 0;
      backoff = BACKOFF_MIN_MS;
      if (token) send({ type: 'auth', token });
      subscribe();
      // Nothing seen of a topic yet (opening): its current state first.
      for (const t of subscriptions) if (!lastSeq.has(t)) resync(t, NaN);
      startStats();
    };
    sock.onmessage = (e) => {
      let m;
      try {
        m = JSON.parse(e.data);
      } catch {
        return;
      }
      if (m && typeof m === 'object') onMessage(m);
    };
    sock.onclose = (e) => {
      if (ws !== sock) return;
      ws = null;
      stopStats();
      for (const topic of [...rebuilding.keys()]) endRebuild(topic);
      if (e.code === CLOSE_UNAUTHORIZED) {
        askToken(e.reason || 'unauthorized');
        return; // waits for a token: retrying without one cannot work
      }
      if (needAuth) return;
      if (!opened) {
        failedHandshakes++;
        if (failedHandshakes >= 2) probeRefusal();
      }
      retry();
    };
  }

  // A handshake refused with an HTTP status (too many connections, origin
  // not allowed) looks to a browser like a dead server (close 1006): if
  // the daemon answers /healthz while the socket keeps failing, say so.
  async function probeRefusal() {
    try {
      await fetch('healthz', { cache: 'no-store' }); // throws when down
      if (!ws || ws.readyState !== WebSocket.OPEN) {
        setNotice('sophiad answers HTTP but refuses the WebSocket (too many connections, or this origin is not allowed); retrying');
        refusalShown = true;
      }
    } catch {
      /* the daemon is down: plain reconnecting */
    }
  }

  function retry() {
    const wait = Math.round(backoff * (0.8 + Math.random() * 0.4));
    backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
    setConn('reconnecting', `reconnecting in ${Math.max(1, Math.round(wait / 1000))}s`);
    retryTimer = setTimeout(connect, wait);
  }

  $('auth').addEventListener('submit', (e) => {
    e.preventDefault();
    token = $('token').value.trim();
    if (token) store.set(token);
    needAuth = false;
    $('auth').hidden = true;
    backoff = BACKOFF_MIN_MS;
    if (ws) ws.close(1000, 'new token');
    ws = null;
    setConn('connecting');
    connect();
  });

  // Online again or the tab came back: try now rather than at the end of
  // a long backoff.
  const retryNow = () => {
    if (retryTimer && !needAuth) {
      backoff = BACKOFF_MIN_MS;
      connect();
    }
  };
  addEventListener('online', retryNow);
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden) retryNow();
  });

  // For tests and the curious: read-only counters, and a way to simulate a
  // network drop (pause closes and stays down until resume).
  window.sophiaDashboard = {
    perf,
    lastSeq,
    get state() {
      return conn.state;
    },
    pause() {
      paused = true;
      clearTimeout(retryTimer);
      if (ws) ws.close(1000, 'paused');
      ws = null;
      stopStats();
      setConn('offline', 'paused');
    },
    resume() {
      paused = false;
      setConn('connecting');
      connect();
    },
  };

  // A token given in the URL moves to sessionStorage and out of the
  // address bar, so it is not bookmarked, shared or screenshotted.
  if (params.has('token')) {
    if (token) store.set(token);
    params.delete('token');
    const q = params.toString();
    history.replaceState(null, '', location.pathname + (q ? '?' + q : '') + location.hash);
  }

  /* ------------------------------------------------------------ picker */

  // The dashboards with data (GET /api/dashboards), plus this one; picking
  // one loads the page for it. Refreshed when the picker is opened.
  async function loadDashboards() {
    const pick = $('dash-picker');
    let list = [];
    try {
      const res = await fetch('api/dashboards', { cache: 'no-store' });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const body = await res.json();
      list = Array.isArray(body.dashboards) ? body.dashboards : [];
    } catch {
      if (!pick.options.length) return; // the name alone stays shown
    }
    const ids = new Map();
    for (const x of list) if (x && typeof x.id === 'string') ids.set(x.id, x);
    if (!ids.has(dashboard)) ids.set(dashboard, { id: dashboard, metrics: 0 });
    const opts = [...ids.values()].sort((a, b) => a.id.localeCompare(b.id)).map((x) => {
      const o = el('option', '', x.metrics ? `${x.id} (${x.metrics})` : x.id);
      o.value = x.id;
      return o;
    });
    pick.replaceChildren(...opts);
    pick.value = dashboard;
    pick.hidden = false;
    $('dash-name').hidden = true;
  }

  $('dash-picker').addEventListener('change', (e) => {
    const id = e.target.value;
    if (!id || id === dashboard) return;
    const q = new URLSearchParams(location.search);
    q.set('dashboard', id);
    location.assign(location.pathname + '?' + q.toString());
  });
  $('dash-picker').addEventListener('focus', loadDashboards);

  $('dash-name').textContent = dashboard;
  document.title = `Sophia · ${dashboard}`;
  loadDashboards();
  connect();
})();
