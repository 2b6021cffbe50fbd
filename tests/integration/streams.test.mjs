// The five processors end to end: every sample file of tests/data
// through its real endpoint (HTTP ingest, DogStatsD over UDP), a real
// WebSocket client asserting the published updates, and the cache read
// back through GET /api/cache/{key}. Plus filter, dedup and backpressure.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import dgram from 'node:dgram';
import path from 'node:path';
import {
  startDaemon, fetchJson, wsConnect, nextMessage, takeMessages, until as waitUntil,
} from './lib/daemon.mjs';

const SAMPLES = path.join(process.env.SOPHIA_SOURCE_DIR, 'tests', 'data');
const sample = (name) => readFileSync(path.join(SAMPLES, name), 'utf8');

function freeUdpPort() {
  return new Promise((resolve) => {
    const s = dgram.createSocket('udp4');
    s.bind(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

let d;
let ws;
let statsdPort;
// Cache keys unique to this run: Redis and PostgreSQL are shared, and the
// crm processor reads a deal's previous state back from the cache.
const RUN = `r${process.pid}x${Date.now()}`;

before(async () => {
  statsdPort = await freeUdpPort();
  d = await startDaemon({
    yaml: `
plugins:
  path: ["@PLUGIN_DIR@", "@TEST_PLUGIN_DIR@"]
  instances:
    metrics:
      plugin: metrics
      options:
        windows: [60]
        thresholds: ["api_requests_per_min>9000/8000@critical"]
    gong: {plugin: gong}
    slack:
      plugin: slack
      options:
        alert_rules: ["warning=churn|cancel"]
    crm:
      plugin: crm
      options: {cache_prefix: "crm-${RUN}:"}
    snowflake:
      plugin: snowflake
      options:
        keys: ["ANALYTICS.PUBLIC.ACCOUNT_HEALTH=ACCOUNT_ID"]
    echo:
      plugin: echo
      options: {topic: echoed}
    slow:
      plugin: failer
      options: {topic: slow}
streams:
  metrics:
    processor: metrics
    statsd: {listen: "127.0.0.1:${statsdPort}"}
  gong: {processor: gong}
  slack: {processor: slack}
  crm: {processor: crm}
  snowflake: {processor: snowflake}
  filtered:
    processor: echo
    dedup_key: id
    dedup_window: 10m
    filter:
      - {path: kind, equals: keep}
      - {path: n, gt: 2}
      - {path: tag, in: [a, b]}
      - {path: text, matches: "^he", icase: true}
      - {path: secret, exists: false}
  tiny:
    processor: slow
    queue_size: 5
    batch_size: 1
`,
    env: { SOPHIA_GONG_SECRET: 'gong-secret', SOPHIA_SLACK_SIGNING_SECRET: 'slack-secret' },
  });
  ws = await wsConnect(d.wsUrl);
  ws.send(JSON.stringify({ type: 'subscribe', subscriptions: ['updates:*', 'alerts', 'dashboard:*'] }));
  await nextMessage(ws, 'subscribed');
});

after(async () => {
  if (ws) ws.close();
  if (d) await d.stop();
});

const cacheGet = async (key) => fetchJson(`${d.url}/api/cache/${encodeURIComponent(key)}`);
const stats = async () => (await fetchJson(`${d.url}/api/stats`)).body.streams;

const until = (fn, what, ms = 5000) => waitUntil(fn, what, ms, 30);

test('metrics.ndjson: metric updates, a rolling aggregate, a threshold alert with hysteresis', async () => {
  const res = await fetchJson(`${d.url}/ingest/metrics`, { method: 'POST', body: sample('metrics.ndjson') });
  assert.equal(res.status, 202);
  const rev = await nextMessage(ws, (m) => m.type === 'metric' && m.data.metric === 'revenue');
  assert.equal(rev.dashboard_id, 'executive');
  assert.equal(rev.data.value, 125000);
  const agg = await nextMessage(ws, (m) => m.type === 'data' && m.data.kind === 'aggregate' && m.data.metric === 'revenue');
  assert.deepEqual({ ...agg.data }, {
    kind: 'aggregate', metric: 'revenue', labels: { region: 'emea' }, window_s: 60, count: 1, sum: 125000, min: 125000, max: 125000,
    p50: 125000, p95: 125000, p99: 125000,
  });
  const alert = await nextMessage(ws, (m) => m.type === 'alert' && m.data.alert_type === 'threshold');
  assert.equal(alert.data.severity, 'critical');
  assert.equal(alert.data.state, 'firing');
  assert.equal(alert.data.metric, 'api_requests_per_min');
  // 8500 is below the trigger but above the clear level: no new alert.
  const point = (v) => ({ metric: 'api_requests_per_min', value: v, dashboard_id: 'ops', labels: { service: 'api' } });
  await fetchJson(`${d.url}/ingest/metrics`, { method: 'POST', body: [point(8500), point(9500)] });
  await nextMessage(ws, (m) => m.type === 'metric' && m.data.value === 9500);
  await assert.rejects(nextMessage(ws, (m) => m.type === 'alert' && m.data.alert_type === 'threshold', 200), /timeout/);
  await fetchJson(`${d.url}/ingest/metrics`, { method: 'POST', body: point(7000) });
  const resolved = await nextMessage(ws, (m) => m.type === 'alert' && m.data.alert_type === 'threshold');
  assert.equal(resolved.data.state, 'resolved');
  assert.equal(resolved.data.severity, 'critical');
  assert.equal(resolved.data.alert_id, alert.data.alert_id);
  const cached = await cacheGet('metric:executive:revenue{region=emea}');
  assert.equal(cached.status, 200, cached.text);
  assert.equal(cached.body.value.value, 125000);
  const aggCached = await cacheGet('metric:agg:ops:api_requests_per_min{service=api}:60');
  assert.equal(aggCached.status, 200, aggCached.text);
  assert.ok(aggCached.body.value.count >= 1);
});

test('metrics.statsd over UDP: counter, timer with sample rate, gauge with dashboard tag', async () => {
  const sock = dgram.createSocket('udp4');
  await new Promise((r) => sock.send(Buffer.from(sample('metrics.statsd')), statsdPort, '127.0.0.1', r));
  sock.close();
  const c = await nextMessage(ws, (m) => m.type === 'metric' && m.data.metric === 'api.requests');
  assert.equal(c.data.value, 1);
  assert.deepEqual(c.data.labels, { service: 'api', env: 'prod' });
  const t = await nextMessage(ws, (m) => m.type === 'metric' && m.data.metric === 'api.latency_ms');
  assert.equal(t.data.value, 23.5, 'a timer is not scaled by its sample rate');
  assert.deepEqual(t.data.labels, { service: 'api' });
  const g = await nextMessage(ws, (m) => m.type === 'metric' && m.data.metric === 'active_users');
  assert.equal(g.dashboard_id, 'executive');
  assert.equal(g.data.value, 1250);
  const cached = await cacheGet('metric:executive:active_users');
  assert.equal(cached.body.value.value, 1250);
  assert.deepEqual((await stats()).metrics.sources.statsd, { datagrams: 1, points: 3, bad_lines: 0, dropped: 0, refused: 0 });
});

test('gong_calls.ndjson through /hooks/gong: analysis, risk alert, cache per call and account', async () => {
  const bad = await fetchJson(`${d.url}/hooks/gong`, { method: 'POST', body: sample('gong_calls.ndjson'), headers: { 'x-gong-secret': 'nope' } });
  assert.equal(bad.status, 401);
  assert.equal(bad.body.error.code, 'unauthorized');
  const res = await fetchJson(`${d.url}/hooks/gong`, {
    method: 'POST', body: sample('gong_calls.ndjson'), headers: { 'x-gong-secret': 'gong-secret' },
  });
  assert.equal(res.status, 202);
  assert.deepEqual(res.body, { accepted: 2 });
  const u = await nextMessage(ws, (m) => m.type === 'data' && m.data.kind === 'gong_call' && m.data.transcript === true);
  assert.equal(u.dashboard_id, 'sales');
  const a = u.data;
  assert.equal(a.call_id, '7782342274025937895');
  assert.equal(a.account, 'acme');
  assert.equal(a.opportunity, '0063000000dXzKo');
  assert.deepEqual(a.topics, ['Pricing', 'Next Steps']);
  // Jane: 2113 + 5500 + 5500 ms, Bob: 5900 + 4900 ms.
  assert.deepEqual(a.talk_ms, { 'Jane Seller': 13113, 'Bob Buyer': 10800 });
  assert.deepEqual(a.talk_ratio, { rep: 0.548, customer: 0.452 }); // by affiliation
  assert.deepEqual(a.longest_monologue, { speaker: 'Bob Buyer', ms: 10900 });
  assert.deepEqual(a.risk_phrases, ['competitor', 'budget']);
  assert.equal(a.action_items.length, 1);
  assert.match(a.action_items[0].text, /^I will send the updated proposal/);
  const alert = await nextMessage(ws, (m) => m.type === 'alert' && m.data.alert_type === 'deal_risk');
  assert.equal(alert.data.severity, 'warning');
  assert.match(alert.data.message, /Acme Corp - Renewal discussion: risk phrases competitor, budget/);
  const call = await cacheGet('gong:call:7782342274025937895');
  assert.equal(call.status, 200);
  assert.deepEqual(call.body.value.risk_phrases, ['competitor', 'budget']);
  const acct = await cacheGet('gong:account:acme');
  assert.equal(acct.body.value.call_id, '7782342274025937895');
  // The URL key is refused unless hooks.gong.allow_query_key (proxy logs).
  const byKey = await fetchJson(`${d.url}/hooks/gong?key=gong-secret`, { method: 'POST', body: '{"callId":"x","transcript":[]}' });
  assert.equal(byKey.status, 401);
  assert.equal(byKey.body.error.code, 'query_key_disabled');
});

test('crm_updates.ndjson: stage transitions, amounts, won/lost and large-deal alerts, invalidation by tag', async () => {
  // Something derived from the Salesforce opportunity, tagged with it.
  const put = await fetchJson(`${d.url}/api/cache/derived:opp`, {
    method: 'PUT', body: { value: { x: 1 }, tags: ['opportunity:0063000000dXzKo'] },
  });
  assert.equal(put.status, 200, put.text);
  const res = await fetchJson(`${d.url}/ingest/crm`, { method: 'POST', body: sample('crm_updates.ndjson') });
  assert.equal(res.status, 202);
  assert.deepEqual(res.body, { accepted: 4 }, 'the HubSpot batch counts as its two events');
  const stage = await nextMessage(ws, (m) => m.type === 'data' && m.data.kind === 'deal_stage' && m.data.source === 'hubspot');
  assert.equal(stage.data.to, 'closedwon');
  const won = await nextMessage(ws, (m) => m.type === 'alert' && m.data.alert_type === 'deal_won');
  assert.equal(won.data.deal_id, '123456');
  const amt = await nextMessage(ws, (m) => m.type === 'data' && m.data.kind === 'deal_amount' && m.data.source === 'hubspot');
  assert.equal(amt.data.to, 250000);
  const large = await nextMessage(ws, (m) => m.type === 'alert' && m.data.alert_type === 'large_deal' && m.data.deal_id === '123456');
  assert.equal(large.data.amount, 250000);
  const contact = await nextMessage(ws, (m) => m.type === 'data' && m.data.kind === 'crm_change');
  assert.equal(contact.data.object, 'contact');
  assert.equal(contact.data.id, '987654');
  const sf = await nextMessage(ws, (m) => m.type === 'data' && m.data.kind === 'deal_stage' && m.data.source === 'salesforce');
  assert.equal(sf.data.to, 'Closed Lost');
  const lost = await nextMessage(ws, (m) => m.type === 'alert' && m.data.alert_type === 'deal_lost');
  assert.equal(lost.data.deal_id, '0063000000dXzKo');
  const deal = await cacheGet(`crm-${RUN}:deal:hubspot:123456`);
  assert.equal(deal.status, 200);
  assert.equal(deal.body.value.stage, 'closedwon');
  assert.equal(deal.body.value.amount, 250000);
  assert.equal((await cacheGet('derived:opp')).status, 404, 'tag opportunity:<id> was invalidated');
  assert.equal((await cacheGet('gong:call:7782342274025937895')).status, 404, 'the gong analysis of that opportunity too');
  // The same stage again is not a transition.
  await fetchJson(`${d.url}/ingest/crm`, { method: 'POST', body: JSON.parse(sample('crm_updates.ndjson').split('\n')[0])[0] });
  await assert.rejects(nextMessage(ws, (m) => m.type === 'data' && m.data.kind === 'deal_stage', 300), /timeout/);
});

test('snowflake_cdc.ndjson: insert, update pair, delete; a replay changes nothing', async () => {
  const body = sample('snowflake_cdc.ndjson');
  const res = await fetchJson(`${d.url}/ingest/snowflake`, { method: 'POST', body });
  assert.equal(res.status, 202);
  const ins = await nextMessage(ws, (m) => m.type === 'data' && m.data.kind === 'snowflake_change' && m.data.action === 'insert');
  assert.equal(ins.data.key, 'acme');
  assert.equal(ins.data.row.HEALTH_SCORE, 42);
  assert.equal(ins.data.row['METADATA$ACTION'], undefined, 'metadata columns are not data');
  const upd = await nextMessage(ws, (m) => m.type === 'data' && m.data.kind === 'snowflake_change' && m.data.action === 'update');
  assert.equal(upd.data.row.HEALTH_SCORE, 35);
  assert.equal(upd.data.previous.HEALTH_SCORE, 42);
  const del = await nextMessage(ws, (m) => m.type === 'data' && m.data.kind === 'snowflake_change' && m.data.action === 'delete');
  assert.equal(del.data.key, 'globex');
  const acme = await cacheGet('sf:ANALYTICS.PUBLIC.ACCOUNT_HEALTH:acme');
  assert.equal(acme.status, 200);
  assert.equal(acme.body.value.HEALTH_SCORE, 35);
  assert.equal((await cacheGet('sf:ANALYTICS.PUBLIC.ACCOUNT_HEALTH:globex')).status, 404);
  const before = (await stats()).snowflake.processed;
  assert.equal((await fetchJson(`${d.url}/ingest/snowflake`, { method: 'POST', body })).status, 202);
  await until(async () => (await stats()).snowflake.processed === before + 3, 'replay processed');
  await assert.rejects(nextMessage(ws, (m) => m.type === 'data' && m.data.kind === 'snowflake_change', 300), /timeout/);
  assert.equal((await cacheGet('sf:ANALYTICS.PUBLIC.ACCOUNT_HEALTH:acme')).body.value.HEALTH_SCORE, 35);
});

test('filter: equals, gt, in, matches, exists; dedup by id inside the window', async () => {
  const ok = { kind: 'keep', n: 3, tag: 'a', text: 'Hello' };
  const events = [
    { ...ok, id: 'e1' },
    { ...ok, id: 'e2', kind: 'other' },
    { ...ok, id: 'e3', n: 2 },
    { ...ok, id: 'e4', n: '10' }, // numeric strings compare as numbers
    { ...ok, id: 'e5', tag: 'c' },
    { ...ok, id: 'e6', text: 'oh hello' },
    { ...ok, id: 'e7', secret: 1 },
    { ...ok, id: 'e1' }, // a duplicate of e1
    { ...ok, id: 'e8', tag: 'b', text: 'HEY' },
  ];
  const res = await fetchJson(`${d.url}/ingest/filtered`, { method: 'POST', body: events });
  assert.equal(res.status, 202);
  const got = [];
  for (let i = 0; i < 3; i++) got.push((await nextMessage(ws, (m) => m.topic === 'echoed' || (m.type === 'data' && m.data.id && m.data.kind === 'keep'))).data.id);
  assert.deepEqual(got.sort(), ['e1', 'e4', 'e8']);
  await assert.rejects(nextMessage(ws, (m) => m.type === 'data' && m.data.kind === 'keep', 300), /timeout/);
  const s = (await stats()).filtered;
  assert.equal(s.received, 9);
  assert.equal(s.processed, 3);
  assert.equal(s.filtered, 5);
  assert.equal(s.duplicates, 1);
});

test('backpressure: a full queue answers 503 and nothing accepted is lost', async () => {
  let accepted = 0;
  let refused = 0;
  let n = 0;
  const bodies = Array.from({ length: 12 }, () => Array.from({ length: 3 }, () => ({ n: n++, sleep_ms: 5 })));
  const answers = await Promise.all(bodies.map((b) => fetchJson(`${d.url}/ingest/tiny`, { method: 'POST', body: b })));
  const acceptedNs = new Set();
  answers.forEach((a, i) => {
    if (a.status === 202) {
      accepted += 3;
      for (const e of bodies[i]) acceptedNs.add(e.n);
    } else {
      assert.equal(a.status, 503);
      assert.equal(a.headers.get('retry-after'), '1');
      refused++;
    }
  });
  assert.ok(refused > 0, 'the queue of 5 must have refused some bodies');
  await until(async () => (await stats()).tiny.processed === accepted, `${accepted} processed`);
  const seen = new Set();
  for (let i = 0; i < accepted; i++) seen.add((await nextMessage(ws, (m) => m.topic === 'slow' || (m.type === 'data' && m.data.sleep_ms === 5))).data.n);
  assert.deepEqual([...seen].sort((x, y) => x - y), [...acceptedNs].sort((x, y) => x - y));
  const s = (await stats()).tiny;
  assert.equal(s.received, accepted);
  // A body that came while the queue had no room at all was refused at
  // its head, unread (refused_early); the rest were read and refused whole.
  assert.equal(s.rejected + 3 * s.refused_early, refused * 3);
  takeMessages(ws);
});

test('a HubSpot deletion drops the cached record', async () => {
  const ev = { eventId: 2001, subscriptionType: 'deal.deletion', objectId: 123456, occurredAt: 1700000100000 };
  assert.equal((await fetchJson(`${d.url}/ingest/crm`, { method: 'POST', body: ev })).status, 202);
  const u = await nextMessage(ws, (m) => m.type === 'data' && m.data.kind === 'crm_change' && m.data.to === 'deleted');
  assert.equal(u.data.id, '123456');
  assert.equal((await cacheGet(`crm-${RUN}:deal:hubspot:123456`)).status, 404);
});
