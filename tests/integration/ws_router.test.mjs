// The /ws router beyond the basics: patterns with duplicate suppression,
// recovery with `since` (no gap, no duplicate), `resync` once history aged
// out, the `history` request, limits, and a slow client dropped while a
// fast one keeps receiving. Real sophiad, real metrics plugin, real `ws`
// clients; updates are published through POST /ingest/metrics.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startDaemon, fetchJson, wsConnect, nextMessage, sendJson, wsClosed, takeMessages, until,
} from './lib/daemon.mjs';

const YAML = `
server:
  max_body: 16MiB
websocket:
  max_queue: 1024
  coalesce_at: 16
  history: 8
  history_age: 60
  max_subscriptions: 4
  max_message: 2KiB
plugins:
  path: ["@PLUGIN_DIR@"]
  instances:
    metrics:
      plugin: metrics
streams:
  metrics:
    processor: metrics
    queue_size: 100000
    batch_size: 100
    durable: false # router timing (coalescing within 300 ms), not Redis round trips
`;

let d;
before(async () => { d = await startDaemon({ yaml: YAML }); });
after(async () => { if (d) await d.stop(); });

let uniq = 0;
const dash = () => `t${process.pid}x${++uniq}`;

// Ingests and waits until the stream has published them: a 202 only says
// the events were accepted, and each publishes once its effects (the
// metric's cache put, through L3 here) are durable (SPEC §11).
async function ingest(points) {
  const body = points.map((p) => JSON.stringify(p)).join('\n');
  const res = await fetchJson(`${d.url}/ingest/metrics`, { method: 'POST', body });
  assert.equal(res.status, 202, res.text);
  for (let i = 0; i < 500; i++) {
    const st = (await fetchJson(`${d.url}/api/stats`)).body.streams.metrics;
    if (st.queued === 0 && st.inflight === 0) return;
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.fail('the metrics stream did not settle within 5 s');
}

const point = (dashboard, metric, value) => ({
  metric, value, timestamp: '2024-01-20T10:30:00Z', dashboard_id: dashboard,
});

async function subscribe(ws, subscriptions, since) {
  sendJson(ws, since ? { type: 'subscribe', subscriptions, since } : { type: 'subscribe', subscriptions });
  return nextMessage(ws, 'subscribed');
}

async function collect(ws, n, pred = (m) => m.type === 'metric') {
  const out = [];
  for (let i = 0; i < n; i++) out.push(await nextMessage(ws, pred));
  return out;
}

// A topic's seq is written by adding one to the last one's text (ws.c,
// seq_text): through every carry (9 -> 10, 99 -> 100, 999 -> 1000) each
// message's text still says its seq, no more and no fewer digits.
test('seqs on the wire count up through their carries', async () => {
  const id = dash();
  const ws = await wsConnect(d.wsUrl);
  const raw = [];
  ws.on('message', (b) => { const s = b.toString(); if (s.startsWith('{"type":"metric"')) raw.push(s); });
  await subscribe(ws, [`dashboard:${id}`]);
  const N = 1005;
  for (let k = 0; k < N; k += 335) {
    // a metric name each: a slow turn coalesces nothing away
    await ingest(Array.from({ length: Math.min(335, N - k) }, (_, i) => point(id, `m${k + i}`, k + i)));
  }
  await until(() => raw.length >= N, `${N} messages`);
  const base = JSON.parse(raw[0]).seq;
  raw.forEach((s, i) => {
    const head = `{"type":"metric","topic":"dashboard:${id}","seq":${base + i},`;
    assert.ok(s.startsWith(head), `message ${i}: ${s.slice(0, head.length + 8)}`);
    assert.equal(JSON.parse(s).data.metric, `m${i}`);
  });
  ws.close();
});

test('a pattern and an exact topic deliver each update once', async () => {
  const id = dash();
  const ws = await wsConnect(d.wsUrl);
  await subscribe(ws, [`dashboard:${id}`, 'dashboard:*', `dashboard:${id.slice(0, 3)}*`]);
  await ingest([point(id, 'a', 1), point(id, 'b', 2)]);
  const got = await collect(ws, 2);
  assert.deepEqual(got.map((m) => m.data.metric), ['a', 'b']);
  assert.equal(got[1].seq, got[0].seq + 1);
  await assert.rejects(nextMessage(ws, 'metric', 300), /timeout/);
  ws.close();
});

test('reconnecting with since replays what was missed, in order, then live ones', async () => {
  const id = dash();
  const topic = `dashboard:${id}`;
  let ws = await wsConnect(d.wsUrl);
  await subscribe(ws, [topic]);
  await ingest([point(id, 'm', 1), point(id, 'm', 2)]);
  const first = await collect(ws, 2);
  const last = first[1].seq;
  ws.close();
  await ingest([point(id, 'm', 3), point(id, 'm', 4), point(id, 'm', 5)]);
  // published while away; reconnect with a pattern too: no duplicates.
  ws = await wsConnect(d.wsUrl);
  const sub = await subscribe(ws, [topic, 'dashboard:*'], { [topic]: last });
  assert.deepEqual(sub.subscriptions, [topic, 'dashboard:*']);
  await ingest([point(id, 'm', 6)]);
  const got = await collect(ws, 4, (m) => m.type === 'metric' && m.topic === topic);
  assert.deepEqual(got.map((m) => m.data.value), [3, 4, 5, 6]);
  assert.deepEqual(got.map((m) => m.seq), [last + 1, last + 2, last + 3, last + 4]);
  await assert.rejects(nextMessage(ws, 'metric', 300), /timeout/);
  ws.close();
});

test('since on a pattern subscription replays per matching topic', async () => {
  const a = dash();
  const b = dash();
  await ingest([point(a, 'x', 1), point(b, 'x', 2), point(a, 'x', 3)]);
  const ws = await wsConnect(d.wsUrl);
  await subscribe(ws, ['dashboard:t*'], { [`dashboard:${a}`]: 1, [`dashboard:${b}`]: 0 });
  const got = await collect(ws, 2);
  // publish order across topics: b's first update, then a's second.
  assert.deepEqual(got.map((m) => [m.topic, m.seq, m.data.value]),
    [[`dashboard:${b}`, 1, 2], [`dashboard:${a}`, 2, 3]]);
  await assert.rejects(nextMessage(ws, 'metric', 300), /timeout/);
  ws.close();
});

test('since older than the history answers resync', async () => {
  const id = dash();
  const topic = `dashboard:${id}`;
  await ingest(Array.from({ length: 12 }, (_, i) => point(id, 'm', i)));
  const ws = await wsConnect(d.wsUrl);
  await subscribe(ws, [topic], { [topic]: 1 });
  const r = await nextMessage(ws, 'resync');
  assert.deepEqual(r, { type: 'resync', topic, seq: 12 });
  await assert.rejects(nextMessage(ws, 'metric', 300), /timeout/);
  // a seq from the future (server restarted) is a resync too
  sendJson(ws, { type: 'subscribe', subscriptions: [topic], since: { [topic]: 99 } });
  assert.equal((await nextMessage(ws, 'resync')).seq, 12);
  ws.close();
});

// A topic nobody follows keeps its publishes unrendered (ws_history.h):
// a history request or a `since` replay renders them then, each with its
// own topic, seq and dashboard.
test('a topic nobody followed replays its publishes rendered for it', async () => {
  const id = dash();
  await ingest([point(id, 'lazy', 7), point(id, 'lazy', 8)]);
  const ws = await wsConnect(d.wsUrl);
  sendJson(ws, { type: 'request', id: 'h', method: 'history', params: { topic: 'stream:metrics', limit: 1000 } });
  const r = await nextMessage(ws, 'response');
  const mine = r.data.messages.filter((m) => m.dashboard_id === id);
  assert.deepEqual(mine.map((m) => [m.type, m.topic, m.data.metric, m.data.value]),
    [['metric', 'stream:metrics', 'lazy', 7], ['metric', 'stream:metrics', 'lazy', 8]]);
  assert.equal(mine[1].seq, r.data.seq);
  assert.equal(mine[0].seq, r.data.seq - 1);
  sendJson(ws, { type: 'request', id: 'u', method: 'history', params: { topic: 'updates:metric', limit: 1 } });
  const u = await nextMessage(ws, 'response');
  await subscribe(ws, ['updates:metric'], { 'updates:metric': u.data.seq - 2 });
  const got = await collect(ws, 2, (m) => m.type === 'metric' && m.topic === 'updates:metric');
  assert.deepEqual(got.map((m) => [m.dashboard_id, m.data.value]), [[id, 7], [id, 8]]);
  ws.close();
});

test('request history returns the newest messages of a topic', async () => {
  const id = dash();
  const topic = `dashboard:${id}`;
  await ingest([point(id, 'm', 1), point(id, 'm', 2), point(id, 'm', 3)]);
  const ws = await wsConnect(d.wsUrl);
  sendJson(ws, { type: 'request', id: 'h1', method: 'history', params: { topic, since: 1 } });
  const r = await nextMessage(ws, 'response');
  assert.equal(r.id, 'h1');
  assert.equal(r.data.seq, 3);
  assert.equal(r.data.complete, true);
  assert.deepEqual(r.data.messages.map((m) => [m.seq, m.data.value]), [[2, 2], [3, 3]]);
  sendJson(ws, { type: 'request', id: 'h2', method: 'history', params: { topic: 'dashboard:*' } });
  assert.equal((await nextMessage(ws, 'error')).error.code, 'bad_request');
  sendJson(ws, { type: 'request', id: 's', method: 'stats' });
  const s = await nextMessage(ws, 'response');
  assert.equal(typeof s.data.websocket.recovered, 'number');
  ws.close();
});

test('limits: subscriptions per connection and message size', async () => {
  const ws = await wsConnect(d.wsUrl);
  sendJson(ws, { type: 'subscribe', subscriptions: ['a', 'b', 'c', 'd', 'e'] });
  const e = await nextMessage(ws, 'error');
  assert.equal(e.error.code, 'too_many_subscriptions');
  assert.deepEqual((await nextMessage(ws, 'subscribed')).subscriptions, ['a', 'b', 'c', 'd']);
  ws.send(JSON.stringify({ type: 'ping', pad: 'x'.repeat(4096) }));
  const c = await wsClosed(ws);
  assert.equal(c.code, 1009);
});

test('topics longer than 200 bytes are refused with bad_topic, the connection stays', async () => {
  const ws = await wsConnect(d.wsUrl);
  const at = `l${'x'.repeat(199)}`; // 200 bytes: the limit
  sendJson(ws, { type: 'subscribe', subscriptions: [at, `${at}y`, `${at}*`, 'x'.repeat(1000)] });
  for (let i = 0; i < 3; i++) {
    const e = await nextMessage(ws, 'error');
    assert.equal(e.error.code, 'bad_topic');
    assert.match(e.error.message, /1-200/);
  }
  assert.deepEqual((await nextMessage(ws, 'subscribed')).subscriptions, [at]);
  sendJson(ws, { type: 'request', id: 'long', method: 'history', params: { topic: `${at}y` } });
  const h = await nextMessage(ws, (m) => m.id === 'long');
  assert.equal(h.type, 'error');
  assert.equal(h.error.code, 'bad_request');
  sendJson(ws, { type: 'ping' });
  await nextMessage(ws, 'pong'); // still served
  ws.close();
});

test('a client that never reads is dropped (1008) while a fast one gets everything', async () => {
  const id = dash();
  const topic = `dashboard:${id}`;
  const fast = await wsConnect(d.wsUrl);
  const slow = await wsConnect(d.wsUrl);
  await subscribe(fast, [topic]);
  await subscribe(slow, [topic]);
  slow._socket.pause();
  const before = (await fetchJson(`${d.url}/api/stats`)).body.websocket;
  const N = 6000;
  const big = 'y'.repeat(1000); // fill the socket buffers fast
  for (let i = 0; i < N; i += 500) {
    await ingest(Array.from({ length: 500 }, (_, k) => ({ ...point(id, `m${i + k}`, i + k), labels: { big } })));
  }
  const got = await collect(fast, N);
  assert.deepEqual(got.map((m) => m.data.value), Array.from({ length: N }, (_, i) => i));
  let after;
  for (let i = 0; i < 100; i++) {
    after = (await fetchJson(`${d.url}/api/stats`)).body.websocket;
    if (after.slow_closed > before.slow_closed && after.connections === before.connections - 1) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(after.slow_closed, before.slow_closed + 1);
  assert.equal(after.connections, before.connections - 1, 'the slow connection is gone');
  assert.ok(after.dropped > before.dropped);
  slow._socket.resume();
  const c = await wsClosed(slow);
  assert.ok(c.code === 1008 || c.code === 1006, `close code ${c.code}`);
  takeMessages(slow);
  fast.close();
});

// Messages wait for the flush at the end of the loop turn that published
// them; one ingest batch (batch_size 100) is such a turn. A client that
// reads must not look slow because of it: every update of one metric
// arrives, none coalesced (coalesce_at is 16), none dropped.
test('a fast reader gets every update of a big batch, uncoalesced', async () => {
  const id = dash();
  const ws = await wsConnect(d.wsUrl);
  await subscribe(ws, [`dashboard:${id}`]);
  const before = (await fetchJson(`${d.url}/api/stats`)).body.websocket;
  const N = 1000;
  await ingest(Array.from({ length: N }, (_, k) => point(id, 'one', k)));
  const got = await collect(ws, N);
  assert.deepEqual(got.map((m) => m.data.value), Array.from({ length: N }, (_, i) => i));
  const after = (await fetchJson(`${d.url}/api/stats`)).body.websocket;
  assert.equal(after.coalesced, before.coalesced, 'nothing coalesced for a reading client');
  assert.equal(after.slow_closed, before.slow_closed);
  ws.close();
});

test('a slow reader of one metric has it coalesced, not dropped', async () => {
  const id = dash();
  const topic = `dashboard:${id}`;
  const slow = await wsConnect(d.wsUrl);
  await subscribe(slow, [topic]);
  slow._socket.pause();
  const before = (await fetchJson(`${d.url}/api/stats`)).body.websocket;
  const big = 'z'.repeat(8000);
  // two metrics, many updates each: far more than coalesce_at (16) in total
  for (let i = 0; i < 4; i++) {
    await ingest(Array.from({ length: 200 }, (_, k) => ({ ...point(id, k % 2 ? 'odd' : 'even', i * 200 + k), labels: { big } })));
  }
  await new Promise((r) => setTimeout(r, 300));
  const after = (await fetchJson(`${d.url}/api/stats`)).body.websocket;
  assert.ok(after.coalesced > before.coalesced, 'updates were coalesced');
  assert.equal(after.slow_closed, before.slow_closed, 'and the client was kept');
  slow._socket.resume();
  // the last value of each metric arrives, in per-topic seq order
  const seen = [];
  for (;;) {
    const m = await nextMessage(slow, 'metric');
    seen.push(m);
    if (m.data.value === 799) break;
  }
  for (let i = 1; i < seen.length; i++) assert.ok(seen[i].seq > seen[i - 1].seq);
  assert.ok(seen.some((m) => m.data.value === 798), 'latest even value delivered');
  assert.ok(seen.length < 800, `coalesced: ${seen.length} of 800 delivered`);
  slow.close();
});

test('/metrics and /api/stats expose the router counters', async () => {
  const res = await fetch(`${d.url}/metrics`);
  const text = await res.text();
  for (const name of ['sophia_ws_coalesced_total', 'sophia_ws_recovered_total',
    'sophia_ws_auth_failures_total', 'sophia_ws_dead_closed_total']) {
    assert.match(text, new RegExp(`^${name} \\d+$`, 'm'));
  }
  const s = (await fetchJson(`${d.url}/api/stats`)).body.websocket;
  assert.ok(s.recovered >= 5);
  assert.ok(s.resyncs >= 2);
  assert.equal(typeof s.top_topics, 'object');
});
