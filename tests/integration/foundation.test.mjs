// The foundation end to end: a real sophiad with the real metrics plugin,
// real Redis and PostgreSQL (from the harness), an HTTP client for ingest
// and a real WebSocket client (the `ws` package) on /ws.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import {
  startDaemon, runSophiad, fetchJson, wsConnect, nextMessage,
} from './lib/daemon.mjs';

// The sample payloads, kept in the repository (tests/data/README.md says
// where their shapes come from), so a fresh clone needs nothing beside it.
const SAMPLES = path.join(process.env.SOPHIA_SOURCE_DIR, 'tests', 'data');
const samplePath = (name) => readFileSync(path.join(SAMPLES, name), 'utf8');

const YAML = `
server:
  max_body: 4096
plugins:
  path: ["@PLUGIN_DIR@"]
  instances:
    metrics:
      plugin: metrics
      options:
        default_dashboard: default
streams:
  metrics:
    processor: metrics
    queue_size: 8
`;

let d;
before(async () => { d = await startDaemon({ yaml: YAML }); });
after(async () => { if (d) await d.stop(); });

test('healthz is ok with real Redis and PostgreSQL up', async () => {
  // The tiers connect asynchronously; give them a moment.
  let res;
  for (let i = 0; i < 50; i++) {
    res = await fetchJson(`${d.url}/healthz`);
    if (res.status === 200) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(res.status, 200, JSON.stringify(res.body));
  assert.equal(res.body.status, 'ok');
  assert.equal(res.body.tiers.l2, 'up');
  assert.equal(res.body.tiers.l3, 'up');
});

test('metric points go from POST /ingest/metrics to /ws subscribers in the SPEC format', async () => {
  const ws = await wsConnect(d.wsUrl);
  ws.send(JSON.stringify({ type: 'subscribe', subscriptions: ['updates:metric', 'dashboard:executive'] }));
  const sub = await nextMessage(ws, (m) => m.type === 'subscribed');
  assert.deepEqual(sub, { type: 'subscribed', subscriptions: ['updates:metric', 'dashboard:executive'] });

  const body = samplePath('metrics.ndjson');
  const res = await fetchJson(`${d.url}/ingest/metrics`, { method: 'POST', body });
  assert.equal(res.status, 202);
  assert.deepEqual(res.body, { accepted: 3 });

  // First point: dashboard executive; subscribed to both topics, delivered once,
  // stamped with the first matching topic (updates:metric) and its seq.
  const m1 = await nextMessage(ws, (m) => m.type === 'metric' && m.data.metric === 'revenue');
  assert.equal(m1.topic, 'updates:metric');
  assert.equal(m1.dashboard_id, 'executive');
  assert.equal(typeof m1.seq, 'number');
  assert.deepEqual(m1.data, {
    metric: 'revenue', value: 125000, timestamp: '2024-01-20T10:30:00Z', labels: { region: 'emea' },
  });
  const m2 = await nextMessage(ws, (m) => m.type === 'metric' && m.data.metric === 'active_users');
  assert.equal(m2.seq, m1.seq + 1, 'seq of updates:metric grows by one per update');
  const m3 = await nextMessage(ws, (m) => m.type === 'metric' && m.data.metric === 'api_requests_per_min');
  assert.equal(m3.dashboard_id, 'ops');
  ws.close();
});

test('a dashboard-only subscriber gets the dashboard topic, once per update', async () => {
  const ws = await wsConnect(d.wsUrl);
  ws.send(JSON.stringify({ type: 'subscribe', subscriptions: ['dashboard:executive', 'dashboard:*'] }));
  await nextMessage(ws, (m) => m.type === 'subscribed');
  const point = { metric: 'churn', value: 3.5, timestamp: '2024-01-20T11:00:00Z', dashboard_id: 'executive' };
  const res = await fetchJson(`${d.url}/ingest/metrics`, { method: 'POST', body: JSON.stringify(point) });
  assert.equal(res.status, 202);
  const m = await nextMessage(ws, (x) => x.type === 'metric');
  assert.deepEqual(m, {
    type: 'metric', topic: 'dashboard:executive', seq: m.seq, dashboard_id: 'executive',
    data: { metric: 'churn', value: 3.5, timestamp: '2024-01-20T11:00:00Z' },
  });
  // Matching two of this client's subscriptions must not deliver it twice.
  await assert.rejects(nextMessage(ws, (x) => x.type === 'metric', 300), /timeout/);
  ws.close();
});

test('ping, unsubscribe and bad client messages', async () => {
  const ws = await wsConnect(d.wsUrl);
  ws.send(JSON.stringify({ type: 'ping' }));
  assert.deepEqual(await nextMessage(ws, (m) => m.type === 'pong'), { type: 'pong' });
  ws.send(JSON.stringify({ type: 'subscribe', subscriptions: ['updates:metric'] }));
  await nextMessage(ws, (m) => m.type === 'subscribed');
  ws.send(JSON.stringify({ type: 'unsubscribe', subscriptions: ['updates:metric'] }));
  assert.deepEqual(await nextMessage(ws, (m) => m.type === 'unsubscribed'),
    { type: 'unsubscribed', subscriptions: ['updates:metric'] });
  await fetchJson(`${d.url}/ingest/metrics`, { method: 'POST', body: '{"metric":"x","value":1}' });
  await assert.rejects(nextMessage(ws, (m) => m.type === 'metric', 300), /timeout/);
  ws.send('{not json');
  const e = await nextMessage(ws, (m) => m.type === 'error');
  assert.equal(e.error.code, 'bad_json');
  ws.send(JSON.stringify({ type: 'subscribe', subscriptions: 'nope' }));
  assert.equal((await nextMessage(ws, (m) => m.type === 'error')).error.code, 'bad_request');
  ws.close();
});

test('the latest value per metric lands in the cache', async () => {
  const res = await fetchJson(`${d.url}/ingest/metrics`, {
    method: 'POST', body: '{"metric":"mrr","value":42,"dashboard_id":"finance"}',
  });
  assert.equal(res.status, 202);
  let stats;
  for (let i = 0; i < 50; i++) {
    stats = (await fetchJson(`${d.url}/api/stats`)).body;
    if (stats.streams.metrics.processed >= 1 && stats.cache.l1.entries >= 1) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.ok(stats.cache.l1.entries >= 1, JSON.stringify(stats.cache));
  assert.ok(stats.cache.l2.writes >= 1, 'written through to Redis too');
});

test('malformed JSON is refused with its position and nothing is accepted', async () => {
  const before = (await fetchJson(`${d.url}/api/stats`)).body.streams.metrics.received;
  const body = '{"metric":"a","value":1}\n{"metric":"b","value":2}\n{"metric": "c", value: 3}\n';
  const res = await fetchJson(`${d.url}/ingest/metrics`, { method: 'POST', body });
  assert.equal(res.status, 400);
  assert.equal(res.body.error.code, 'bad_json');
  assert.equal(res.body.error.line, 3);
  assert.ok(res.body.error.column > 1);
  assert.ok(res.body.error.offset > 50);
  const after = (await fetchJson(`${d.url}/api/stats`)).body.streams.metrics.received;
  assert.equal(after, before, 'no event of a rejected body is accepted');
  const arr = await fetchJson(`${d.url}/ingest/metrics`, { method: 'POST', body: '[{"metric":"a","value":1}, 5]' });
  assert.equal(arr.status, 400);
  assert.match(arr.body.error.message, /element 1/);
});

test('unknown stream is 404, oversize body is 413, unknown path is 404', async () => {
  const r404 = await fetchJson(`${d.url}/ingest/nosuch`, { method: 'POST', body: '{}' });
  assert.equal(r404.status, 404);
  assert.equal(r404.body.error.code, 'unknown_stream');
  const big = JSON.stringify({ metric: 'big', value: 1, pad: 'x'.repeat(8000) });
  const r413 = await fetchJson(`${d.url}/ingest/metrics`, { method: 'POST', body: big });
  assert.equal(r413.status, 413);
  assert.equal(r413.body.error.code, 'body_too_large');
  const nf = await fetchJson(`${d.url}/nope`);
  assert.equal(nf.status, 404);
  // The daemon is still serving.
  assert.equal((await fetchJson(`${d.url}/healthz`)).status, 200);
});

test('a body larger than the free queue space is 503 with Retry-After, all or nothing', async () => {
  const points = Array.from({ length: 9 }, (_, i) => ({ metric: `q${i}`, value: i }));
  const before = (await fetchJson(`${d.url}/api/stats`)).body.streams.metrics.received;
  const res = await fetchJson(`${d.url}/ingest/metrics`, { method: 'POST', body: JSON.stringify(points) });
  assert.equal(res.status, 503);
  assert.equal(res.headers.get('retry-after'), '1');
  const after = (await fetchJson(`${d.url}/api/stats`)).body.streams.metrics.received;
  assert.equal(after, before);
});

test('/metrics is Prometheus text with sophia_ names and real counts', async () => {
  const res = await fetch(`${d.url}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /text\/plain; version=0\.0\.4/);
  const text = await res.text();
  for (const line of text.split('\n')) {
    if (line && !line.startsWith('#')) assert.match(line, /^sophia_[a-z0-9_]+(\{[^}]*\})? [-+0-9.eE]+$/, line);
  }
  const received = Number(text.match(/^sophia_stream_events_received_total\{stream="metrics"\} (\d+)$/m)[1]);
  assert.ok(received >= 5);
  assert.match(text, /^sophia_plugin_info\{instance="metrics",plugin="metrics",version="[^"]+",kind="processor"\} 1$/m);
  assert.match(text, /^sophia_ws_connections \d+$/m);
  assert.match(text, /^sophia_plugin_load_failures_total 0$/m);
  assert.match(text, /^sophia_cache_tier_up\{tier="l2"\} 1$/m);
});

test('/api/stats names plugins, streams, websocket and cache', async () => {
  const { status, body } = await fetchJson(`${d.url}/api/stats`);
  assert.equal(status, 200);
  const p = body.plugins.find((x) => x.name === 'metrics');
  assert.equal(p.kind, 'processor');
  assert.match(p.file, /metrics\.so$/);
  assert.ok(body.streams.metrics.processed >= 5);
  assert.equal(typeof body.websocket.connections, 'number');
  assert.equal(body.cache.l2.status, 'up');
  assert.equal(body.cache.l3.status, 'up');
});

test('/ serves the dashboard page', async () => {
  const res = await fetch(`${d.url}/`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /text\/html/);
  assert.match(await res.text(), /<title>Sophia<\/title>/);
});

test('connections closed early or reused keep the daemon serving', async () => {
  // A client that connects and leaves before sending a byte (this once
  // crashed the daemon: lws reports that close with no session memory).
  for (let i = 0; i < 5; i++) {
    await new Promise((resolve, reject) => {
      const s = net.connect(d.port, '127.0.0.1', () => { s.destroy(); resolve(); });
      s.on('error', reject);
    });
  }
  // Several requests over one keep-alive connection, answered in order.
  const answers = await new Promise((resolve, reject) => {
    const s = net.connect(d.port, '127.0.0.1');
    let buf = '';
    s.on('data', (c) => {
      buf += c;
      if ((buf.match(/HTTP\/1\.1 /g) || []).length === 3) { s.destroy(); resolve(buf); }
    });
    s.on('error', reject);
    const req = 'GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n';
    s.write(req + req + req);
  });
  assert.equal((answers.match(/HTTP\/1\.1 200/g) || []).length, 3);
  assert.equal((await fetchJson(`${d.url}/healthz`)).status, 200);
});

test('a WebSocket on another path is refused', async () => {
  await assert.rejects(wsConnect(`ws://127.0.0.1:${d.port}/other`));
});

test('SIGTERM closes WebSockets with 1001 and exits 0', async () => {
  const e = await startDaemon({ yaml: YAML });
  const ws = await wsConnect(e.wsUrl);
  const closed = new Promise((resolve) => ws.on('close', (code) => resolve(code)));
  const { code, signal } = await e.stop('SIGTERM');
  assert.equal(await closed, 1001);
  assert.equal(signal, null);
  assert.equal(code, 0);
});
