// POST /hooks/slack and /hooks/gong against a real sophiad: Slack's v0
// signature (good, bad, stale, missing), the url_verification challenge,
// slack_events.ndjson through the slack processor to a real WebSocket
// client, retries de-duplicated by event_id, hooks whose secret is not
// configured, and durable acceptance (stored in Redis before the answer;
// a silent Redis still gets Slack its 503 in time).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { startDaemon, fetchJson, wsConnect, nextMessage } from './lib/daemon.mjs';

const SAMPLES = path.join(process.env.SOPHIA_SOURCE_DIR, 'tests', 'data');
const slackLines = readFileSync(path.join(SAMPLES, 'slack_events.ndjson'), 'utf8').trim().split('\n');
const SECRET = '8f742231b10e8888abcd99yyyzzz85a5';

const YAML = `
plugins:
  path: ["@PLUGIN_DIR@"]
  instances:
    slack:
      plugin: slack
      options:
        alert_rules: ["warning=churn", "critical=lawsuit"]
    gong: {plugin: gong}
streams:
  slack: {processor: slack}
  gong: {processor: gong}
`;

function signed(body, { secret = SECRET, ts = Math.floor(Date.now() / 1000), retry } = {}) {
  const sig = `v0=${createHmac('sha256', secret).update(`v0:${ts}:${body}`).digest('hex')}`;
  const headers = {
    'content-type': 'application/json',
    'x-slack-request-timestamp': String(ts),
    'x-slack-signature': sig,
  };
  if (retry !== undefined) headers['x-slack-retry-num'] = String(retry);
  return { method: 'POST', body, headers };
}

let d;
before(async () => {
  d = await startDaemon({ yaml: YAML, env: { SOPHIA_SLACK_SIGNING_SECRET: SECRET, SOPHIA_GONG_SECRET: 'g' } });
});
after(async () => { if (d) await d.stop(); });

const slackStats = async () => (await fetchJson(`${d.url}/api/stats`)).body.streams.slack;

test('url_verification is answered with its challenge', async () => {
  const res = await fetchJson(`${d.url}/hooks/slack`, signed(slackLines[0]));
  assert.equal(res.status, 200);
  assert.deepEqual(res.body, { challenge: '3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P' });
});

test('a bad, stale or missing signature is 401 and nothing is queued', async () => {
  const before = (await slackStats()).received;
  const bad = await fetchJson(`${d.url}/hooks/slack`, signed(slackLines[1], { secret: 'wrong' }));
  assert.equal(bad.status, 401);
  assert.equal(bad.body.error.code, 'bad_signature');
  const tampered = signed(slackLines[1]);
  tampered.body = tampered.body.replace('churn', 'chum');
  assert.equal((await fetchJson(`${d.url}/hooks/slack`, tampered)).body.error.code, 'bad_signature');
  const stale = await fetchJson(`${d.url}/hooks/slack`, signed(slackLines[1], { ts: Math.floor(Date.now() / 1000) - 301 }));
  assert.equal(stale.status, 401);
  assert.equal(stale.body.error.code, 'stale_request');
  // 310, not 301: the server's whole second may be one past ours by the
  // time it checks, which made +301 exactly 300 s ahead (accepted) under load.
  const future = await fetchJson(`${d.url}/hooks/slack`, signed(slackLines[1], { ts: Math.floor(Date.now() / 1000) + 310 }));
  assert.equal(future.body.error.code, 'stale_request');
  const none = await fetchJson(`${d.url}/hooks/slack`, { method: 'POST', body: slackLines[1] });
  assert.equal(none.status, 401);
  assert.equal(none.body.error.code, 'missing_signature');
  assert.equal((await slackStats()).received, before);
});

test('slack_events.ndjson: channel activity, mentions, deal amounts, keyword alert, app mention', async () => {
  const ws = await wsConnect(d.wsUrl);
  ws.send(JSON.stringify({ type: 'subscribe', subscriptions: ['dashboard:team', 'alerts'] }));
  await nextMessage(ws, 'subscribed');
  for (const line of slackLines.slice(1)) {
    const t0 = Date.now();
    const res = await fetchJson(`${d.url}/hooks/slack`, signed(line));
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, { ok: true });
    assert.ok(Date.now() - t0 < 3000, 'acked within Slack\'s 3 s');
  }
  const alert = await nextMessage(ws, (m) => m.type === 'alert' && m.data.alert_type === 'slack_keyword');
  assert.equal(alert.data.severity, 'warning');
  assert.equal(alert.data.channel, 'C2147483705');
  assert.match(alert.data.message, /churn/);
  const deal = await nextMessage(ws, (m) => m.type === 'data' && m.data.kind === 'deal_mention' && !m.data.edited);
  assert.equal(deal.data.amount, 50000);
  const edit = await nextMessage(ws, (m) => m.type === 'data' && m.data.kind === 'deal_mention' && m.data.edited);
  assert.equal(edit.data.amount, 55000);
  const mention = await nextMessage(ws, (m) => m.type === 'notification' && m.data.kind === 'app_mention');
  assert.equal(mention.data.channel, 'C2147483706');
  let last;
  for (let i = 0; i < 5; i++) {
    last = await nextMessage(ws, (m) => m.type === 'metric' && m.data.metric === 'slack_channel_messages' && m.data.labels.channel === 'C2147483705');
    if (last.data.value === 2) break;
  }
  assert.equal(last.data.value, 2, 'two messages; the edit is not a new message');
  const doc = await fetchJson(`${d.url}/api/cache/slack:channel:C2147483705`);
  assert.equal(doc.status, 200, doc.text);
  assert.equal(doc.body.value.messages, 2);
  assert.equal(doc.body.value.edits, 1);
  assert.equal(doc.body.value.mentions, 1);
  assert.deepEqual(doc.body.value.mentioned, { U2147483697: 1 });
  ws.close();
});

test('a Slack retry of an accepted event_id is acknowledged and dropped', async () => {
  const before = await slackStats();
  const res = await fetchJson(`${d.url}/hooks/slack`, signed(slackLines[1], { retry: 1 }));
  assert.equal(res.status, 200);
  assert.deepEqual(res.body, { ok: true, duplicate: true });
  const again = await fetchJson(`${d.url}/hooks/slack`, signed(slackLines[2], { retry: 2 }));
  assert.equal(again.body.duplicate, true);
  const after = await slackStats();
  assert.equal(after.received, before.received);
  // A new event_id is taken.
  const fresh = JSON.parse(slackLines[1]);
  fresh.event_id = 'Ev-new-1';
  const ok = await fetchJson(`${d.url}/hooks/slack`, signed(JSON.stringify(fresh)));
  assert.deepEqual(ok.body, { ok: true });
  assert.equal((await slackStats()).received, before.received + 1);
});

test('bad JSON under a good signature is 400', async () => {
  const res = await fetchJson(`${d.url}/hooks/slack`, signed('{"type": '));
  assert.equal(res.status, 400);
  assert.equal(res.body.error.code, 'bad_json');
});

test('hooks whose secret is not set refuse everything with 401 and say why', async () => {
  const e = await startDaemon({
    yaml: YAML, env: { SOPHIA_SLACK_SIGNING_SECRET: undefined, SOPHIA_GONG_SECRET: undefined },
  });
  try {
    const s = await fetchJson(`${e.url}/hooks/slack`, signed(slackLines[0]));
    assert.equal(s.status, 401);
    assert.equal(s.body.error.code, 'not_configured');
    assert.match(s.body.error.message, /SOPHIA_SLACK_SIGNING_SECRET/);
    const g = await fetchJson(`${e.url}/hooks/gong`, { method: 'POST', body: '{}', headers: { authorization: 'Bearer x' } });
    assert.equal(g.status, 401);
    assert.match(g.body.error.message, /SOPHIA_GONG_SECRET/);
  } finally {
    await e.stop();
  }
});

test('gong accepts a bearer token', async () => {
  const res = await fetchJson(`${d.url}/hooks/gong`, { method: 'POST', body: '{"callId":"c1","transcript":[]}', token: 'g' });
  assert.equal(res.status, 202);
  const wrong = await fetchJson(`${d.url}/hooks/gong`, { method: 'POST', body: '{}', token: 'h' });
  assert.equal(wrong.status, 401);
  const header = await fetchJson(`${d.url}/hooks/gong`, {
    method: 'POST', body: '{"callId":"c2","transcript":[]}', headers: { 'x-gong-secret': 'g' },
  });
  assert.equal(header.status, 202);
});

// Query strings end up in proxy logs, so ?key= is refused unless
// hooks.gong.allow_query_key is on, and the 401 says how to turn it on.
test('gong ?key= is refused by default with a 401 that says why, accepted when allowed', async () => {
  const before = (await fetchJson(`${d.url}/api/stats`)).body.streams.gong.received;
  const q = await fetchJson(`${d.url}/hooks/gong?key=g`, { method: 'POST', body: '{"callId":"q1"}' });
  assert.equal(q.status, 401);
  assert.equal(q.body.error.code, 'query_key_disabled');
  assert.match(q.body.error.message, /proxy logs/);
  assert.match(q.body.error.message, /hooks\.gong\.allow_query_key: true/);
  assert.equal((await fetchJson(`${d.url}/api/stats`)).body.streams.gong.received, before);
  const e = await startDaemon({
    yaml: `${YAML}hooks:\n  gong: {allow_query_key: true}\n`, env: { SOPHIA_GONG_SECRET: 'g' },
  });
  try {
    const ok = await fetchJson(`${e.url}/hooks/gong?key=g`, { method: 'POST', body: '{"callId":"q2"}' });
    assert.equal(ok.status, 202, JSON.stringify(ok.body));
    const bad = await fetchJson(`${e.url}/hooks/gong?key=h`, { method: 'POST', body: '{"callId":"q3"}' });
    assert.equal(bad.status, 401);
    assert.equal(bad.body.error.code, 'unauthorized');
  } finally {
    await e.stop();
  }
});

test('an explicit preference in Slack becomes a user_preference memory', async () => {
  const ev = JSON.parse(slackLines[1]);
  ev.event_id = 'Ev-pref-1';
  ev.event.text = 'Jane prefers the pipeline summary every 15 minutes';
  const res = await fetchJson(`${d.url}/hooks/slack`, signed(JSON.stringify(ev)));
  assert.equal(res.status, 200);
  let found;
  for (let i = 0; i < 50 && !found; i++) {
    const r = await fetchJson(`${d.url}/api/memory/search?q=${encodeURIComponent('pipeline summary')}&k=5`);
    found = r.body?.results?.find((m) => m.content === ev.event.text);
    if (!found) await new Promise((x) => setTimeout(x, 100));
  }
  assert.ok(found, 'the preference is searchable');
  assert.equal(found.memory_type, 'user_preference');
  assert.equal(found.context.channel, 'C2147483705');
});

// Durable acceptance (core/ingest/durable.h): with Redis configured the hook
// streams are durable, so the 200/202 means the event is in the stream's
// Redis Stream; a Redis that accepts connections and never answers still
// gets Slack a 503 inside its 3 s (the 2 s Redis reply watchdog), and
// nothing is accepted.
test('on a durable stream the hooks answer once the event is stored in Redis', async () => {
  const before = (await slackStats()).sources.redis;
  assert.ok(before.durable, JSON.stringify(before));
  const body = JSON.stringify({ type: 'event_callback', event_id: `EvDurable${Date.now()}`, event: { type: 'message', text: 'stored first', channel: 'C1', user: 'U1', ts: '1.1' } });
  const res = await fetchJson(`${d.url}/hooks/slack`, signed(body));
  assert.equal(res.status, 200);
  assert.equal((await slackStats()).sources.redis.durable.appended, before.durable.appended + 1);
  const gong = (await fetchJson(`${d.url}/api/stats`)).body.streams.gong.sources.redis.durable;
  const g = await fetchJson(`${d.url}/hooks/gong`, {
    method: 'POST', headers: { authorization: 'Bearer g' }, body: [{ id: 'c1' }, { id: 'c2' }],
  });
  assert.equal(g.status, 202);
  assert.equal((await fetchJson(`${d.url}/api/stats`)).body.streams.gong.sources.redis.durable.appended, gong.appended + 2);
});

test('a silent Redis: Slack hears 503 + Retry-After within 3 s, nothing accepted', async () => {
  const net = await import('node:net');
  const silent = net.createServer(() => {}); // accepts, never answers
  await new Promise((r) => silent.listen(0, '127.0.0.1', r));
  const url = `redis://127.0.0.1:${silent.address().port}/0`;
  const s = await startDaemon({ yaml: YAML, env: { SOPHIA_SLACK_SIGNING_SECRET: SECRET, SOPHIA_GONG_SECRET: 'g', SOPHIA_REDIS_URL: url } });
  try {
    const body = JSON.stringify({ type: 'event_callback', event_id: 'EvSilent1', event: { type: 'message', text: 'x', channel: 'C1', user: 'U1', ts: '1.1' } });
    const t0 = Date.now();
    const res = await fetchJson(`${s.url}/hooks/slack`, signed(body));
    const ms = Date.now() - t0;
    assert.equal(res.status, 503, res.text);
    assert.equal(res.headers.get('retry-after'), '1');
    assert.equal(res.body.error.code, 'durable_unavailable');
    assert.ok(ms < 3000, `answered after ${ms} ms`);
    const st = (await fetchJson(`${s.url}/api/stats`)).body.streams.slack;
    assert.equal(st.received, 0);
    // Refused, so not remembered: Slack's retry of the same event_id is
    // not mistaken for a duplicate (it is refused again while Redis is).
    const again = await fetchJson(`${s.url}/hooks/slack`, signed(body, { retry: 1 }));
    assert.equal(again.status, 503);
  } finally {
    await s.stop();
    silent.close();
  }
});
