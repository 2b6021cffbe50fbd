// Topics are bounded (SPEC §5 history, SPEC §12 in spirit): topic names
// come from event data, so a topic with no subscriber whose history has
// aged out (websocket.history_age) is freed by the background sweep, and
// websocket.max_topics caps how many exist - a publish that would create
// one more is delivered live to pattern subscribers with seq 0, not
// recorded, and counted. A freed topic that comes back never reuses a seq
// a client may hold: `since` from its earlier life gets `resync`.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startDaemon, fetchJson, wsConnect, nextMessage, sendJson, until,
} from './lib/daemon.mjs';

const CAP = 40;
const YAML = `
websocket:
  history_age: 1s
  max_topics: ${CAP}
plugins:
  path: ["@PLUGIN_DIR@"]
  instances:
    metrics:
      plugin: metrics
streams:
  metrics:
    processor: metrics
    durable: false
`;

let d;
before(async () => { d = await startDaemon({ yaml: YAML }); });
after(async () => { if (d) await d.stop(); });

const run = `t${process.pid}`;
const point = (dashboard, value = 1) => ({ metric: 'm', value, timestamp: '2024-01-20T10:30:00Z', dashboard_id: dashboard });

async function ingest(points) {
  const res = await fetchJson(`${d.url}/ingest/metrics`, { method: 'POST', body: points.map((p) => JSON.stringify(p)).join('\n') });
  assert.equal(res.status, 202, res.text);
}

const wsStats = async () => (await fetchJson(`${d.url}/api/stats`)).body.websocket;

async function metricsText() {
  const res = await fetch(`${d.url}/metrics`);
  return res.text();
}

const promValue = (text, name) => {
  const m = text.match(new RegExp(`^${name} (\\d+)$`, 'm'));
  assert.ok(m, `${name} in /metrics`);
  return Number(m[1]);
};

async function subscribe(ws, subscriptions, since) {
  sendJson(ws, since ? { type: 'subscribe', subscriptions, since } : { type: 'subscribe', subscriptions });
  return nextMessage(ws, 'subscribed');
}

test('topics over max_topics are refused and counted, idle ones are freed, and a comeback resyncs', async () => {
  const all = await wsConnect(d.wsUrl);
  await subscribe(all, [`dashboard:${run}*`]);
  const keep = await wsConnect(d.wsUrl);
  await subscribe(keep, [`dashboard:${run}keep`]);

  // One event first, on the topic we will watch come back.
  await ingest([point(`${run}back`, 1)]);
  const first = await nextMessage(all, (m) => m.topic === `dashboard:${run}back`);
  assert.equal(first.seq, 1);

  // Far more distinct dashboards than the cap allows.
  const N = 3 * CAP;
  await ingest(Array.from({ length: N }, (_, i) => point(`${run}d${i}`, i)));
  const got = [];
  for (let i = 0; i < N; i++) got.push(await nextMessage(all, (m) => m.type === 'metric' && m.topic.startsWith(`dashboard:${run}d`)));
  // Every one reached the pattern subscriber; those over the cap with seq 0.
  assert.deepEqual(got.map((m) => m.data.value).sort((a, b) => a - b), Array.from({ length: N }, (_, i) => i));
  const unrecorded = got.filter((m) => m.seq === 0).length;
  assert.ok(unrecorded >= N - CAP, `${unrecorded} of ${N} unrecorded`);

  const s = await wsStats();
  assert.ok(s.topics <= CAP, JSON.stringify(s));
  assert.ok(s.topics_refused >= unrecorded, JSON.stringify(s));
  let prom = await metricsText();
  assert.equal(promValue(prom, 'sophia_ws_topics_refused_total'), s.topics_refused);
  assert.ok(promValue(prom, 'sophia_ws_topics') <= CAP);
  // A refused topic has no history to give.
  const over = got.find((m) => m.seq === 0).topic;
  sendJson(keep, { type: 'request', id: 'h1', method: 'history', params: { topic: over } });
  const h = await nextMessage(keep, (m) => m.id === 'h1');
  assert.deepEqual(h.data.messages, []);

  // Past history_age the sweep frees every topic nobody subscribes to;
  // the subscribed one stays.
  const freed = await until(async () => {
    const st = await wsStats();
    return st.topics <= 1 && st;
  }, 'idle topics freed', 15000);
  assert.ok(freed.topics_freed >= CAP - 1, JSON.stringify(freed));
  prom = await metricsText();
  assert.ok(promValue(prom, 'sophia_ws_topics') <= 1);
  assert.ok(promValue(prom, 'sophia_ws_topics_freed_total') >= CAP - 1);

  // Under the cap again: new topics are recorded.
  await ingest([point(`${run}back`, 2), point(`${run}new`, 3)]);
  const back = await nextMessage(all, (m) => m.topic === `dashboard:${run}back`);
  const fresh = await nextMessage(all, (m) => m.topic === `dashboard:${run}new`);
  assert.ok(fresh.seq > 0);
  // The topic came back with a seq above any it had before ...
  assert.ok(back.seq > first.seq + 1, `seq ${back.seq} after ${first.seq}`);
  // ... so a client holding seq 1 from its first life is told to resync
  // rather than silently handed a continuation that skips messages.
  const late = await wsConnect(d.wsUrl);
  sendJson(late, { type: 'subscribe', subscriptions: [`dashboard:${run}back`], since: { [`dashboard:${run}back`]: first.seq } });
  const r = await nextMessage(late, (m) => m.type === 'resync' || m.type === 'metric');
  assert.equal(r.type, 'resync', JSON.stringify(r));
  assert.equal(r.seq, back.seq);
  // Its own seq replays normally.
  sendJson(late, { type: 'subscribe', subscriptions: [`dashboard:${run}back`], since: { [`dashboard:${run}back`]: back.seq - 1 } });
  const replay = await nextMessage(late, (m) => m.type === 'metric' || m.type === 'resync');
  assert.equal(replay.type, 'metric');
  assert.equal(replay.seq, back.seq);
  for (const ws of [all, keep, late]) ws.close();
});
