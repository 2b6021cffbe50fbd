// Correlation (issue #21 item 2) against a real sophiad and Redis: the
// bundled `patterns` correlator sees the committed events of the gong,
// crm, slack and metrics streams (each through its real processor) and
// runs the three rules of the issue. Each rule must fire exactly when its
// sequence is met for one key, and not for another key nor outside its
// window; its state must survive a SIGHUP that replaces the instance
// (export/import) and a restart (its keys in Redis, written as each
// event changed them: correlate_durable.test.mjs kills the daemon).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { mkdtemp, writeFile, rm } from 'node:fs/promises';
import {
  startDaemon, runSophiad, substitute, fetchJson, wsConnect, nextMessage, takeMessages, until, timeoutScale,
} from './lib/daemon.mjs';
import { redisCommand } from './lib/servers.mjs';

const CHURN_WINDOW_S = 4;
const STATE_KEY = `sophia:correlator:${os.hostname()}:deals:keys`;
const data = (f) => readFileSync(path.join(process.env.SOPHIA_SOURCE_DIR, 'tests', 'data', f), 'utf8')
  .split('\n').filter(Boolean).map((l) => JSON.parse(l));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function config(message = 'deal at risk') {
  return `
plugins:
  path: ["@PLUGIN_DIR@"]
  instances:
    gong: {plugin: gong, options: {risk_phrases: [competitor, budget, churn]}}
    crm: {plugin: crm}
    slack: {plugin: slack}
    metrics: {plugin: metrics}
    deals:
      plugin: patterns
      options:
        max_events: 8
        rules:
          - name: deal_at_risk
            severity: critical
            message: ${message}
            window: 24h
            steps:
              - stream: gong
                key: context.*.objects.*.objectId
                match:
                  - {path: "transcript.*.sentences.*.text", contains: [competitor, budget, churn]}
              - stream: crm
                key: data.payload.ChangeEventHeader.recordIds.0
                regresses:
                  path: data.payload.StageName
                  order: [Prospecting, Qualification, Proposal, Negotiation]
          - name: churn_mentions
            severity: warning
            window: ${CHURN_WINDOW_S}s
            steps:
              - stream: slack
                key: event.channel
                count: 3
                match: [{path: event.text, contains: churn}]
          - name: metric_in_negotiation
            severity: critical
            window: 24h
            keep: 24h
            while:
              stream: crm
              key: data.payload.ChangeEventHeader.recordIds.0
              match: [{path: data.payload.StageName, equals: Negotiation}]
            steps:
              - stream: metrics
                key: labels.deal
                match: [{path: metric, equals: discount_pct}, {path: value, gt: 20}]
streams:
  gong: {processor: gong}
  crm: {processor: crm}
  slack: {processor: slack}
  metrics: {processor: metrics}
correlators:
  deals:
    streams: [gong, crm, slack, metrics]
    snapshot_every: 1s
`;
}

// Events in the shapes of the samples, for a key of our choosing.
const [gongCall, gongTranscript] = data('gong_calls.ndjson');
const crmSample = data('crm_salesforce_cdc.ndjson')[0];
const slackSample = data('slack_events.ndjson')[1];
let seq = 0;

function gong(deal, text) {
  const id = String(7700000000000000000n + BigInt(++seq));
  const call = structuredClone(gongCall);
  call.metaData.id = id;
  call.context[0].objects[0].objectId = deal;
  const t = structuredClone(gongTranscript);
  t.transcript = [{ speakerId: call.parties[1].speakerId, topic: 'Pricing', sentences: [{ start: 1, end: 2, text }] }];
  delete t.callId;
  return { ...call, ...t };
}

function crm(deal, stage) {
  const e = structuredClone(crmSample);
  const h = e.data.payload.ChangeEventHeader;
  h.recordIds = [deal];
  h.transactionKey = `tx-${++seq}`;
  h.commitTimestamp = Date.now() + seq;
  h.commitNumber = 20000000000 + seq;
  e.data.payload.StageName = stage;
  e.data.event.replayId = 90000 + seq;
  return e;
}

function slack(channel, text) {
  const e = structuredClone(slackSample);
  e.event = { ...e.event, channel, text, ts: `${1700000000 + ++seq}.000100` };
  e.event_id = `EvCorr${seq}`;
  return e;
}

const metric = (deal, value) => ({ metric: 'discount_pct', value, dashboard_id: 'sales', labels: { deal } });

let d;
let ws;

async function processed(stream) {
  return (await fetchJson(`${d.url}/api/stats`)).body.streams[stream].processed;
}

// Posts and waits until the stream committed the events, so the
// correlator saw them in the order the test sends them across streams.
async function send(stream, ...events) {
  const was = await processed(stream);
  const res = await fetchJson(`${d.url}/ingest/${stream}`, {
    method: 'POST', body: events.map((e) => JSON.stringify(e)).join('\n'),
  });
  assert.equal(res.status, 202, `ingest ${stream} answered ${res.status}`);
  await until(async () => (await processed(stream)) >= was + events.length, `${stream} processed`);
}

const corrOf = (rule) => (m) => m.type === 'alert' && m.data?.alert_type === 'correlation' &&
  m.data?.rule === rule;

async function connect() {
  ws = await wsConnect(d.wsUrl);
  ws.send(JSON.stringify({ type: 'subscribe', subscriptions: ['alerts'] }));
  await nextMessage(ws, 'subscribed');
}

// Every correlation alert of `rule` that arrived so far (a sentinel sent
// last makes sure the ones before it would have come).
async function firedUpTo(rule, sentinelKey) {
  await nextMessage(ws, (m) => corrOf(rule)(m) && m.data.key === sentinelKey, 10000 * timeoutScale);
  const rest = takeMessages(ws).filter(corrOf(rule));
  return rest.map((m) => m.data.key);
}

before(async () => {
  await redisCommand(['DEL', STATE_KEY]);
  d = await startDaemon({ yaml: config() });
  await connect();
});

after(async () => {
  ws?.close();
  if (d) assert.deepEqual(await d.stop(), { code: 0, signal: null, killed: false }, 'clean exit');
});

test('a risk call then a stage regression of the same deal: one critical alert with both events', async () => {
  await send('crm', crm('D1', 'Negotiation'));
  await send('gong', gong('D1', 'Honestly the budget is tight and a competitor quoted us lower.'));
  // Another deal's regression, and a call without risk for a third.
  await send('gong', gong('D2', 'The budget is tight.'));
  await send('crm', crm('D3', 'Negotiation'), crm('D3', 'Qualification'));
  await send('gong', gong('D4', 'Great call, see you next week.'));
  await send('crm', crm('D4', 'Negotiation'), crm('D4', 'Prospecting'));
  // A forward move is no regression.
  await send('crm', crm('D2', 'Proposal'), crm('D2', 'Negotiation'));
  await send('crm', crm('D1', 'Qualification'));
  const m = await nextMessage(ws, corrOf('deal_at_risk'), 10000 * timeoutScale);
  assert.equal(m.data.key, 'D1');
  assert.equal(m.data.severity, 'critical');
  assert.equal(m.data.message, 'deal at risk');
  assert.equal(m.data.state, 'firing');
  assert.deepEqual(m.data.events.map((e) => e.stream), ['gong', 'crm']);
  assert.equal(m.data.events[0].event.context[0].objects[0].objectId, 'D1');
  assert.equal(m.data.events[1].event.data.payload.StageName, 'Qualification');
  // Nothing for D2, D3 or D4: the sentinel D5 is the next one.
  await send('gong', gong('D5', 'They mentioned churn.'));
  await send('crm', crm('D5', 'Proposal'), crm('D5', 'Qualification'));
  assert.deepEqual(await firedUpTo('deal_at_risk', 'D5'), []);
});

test('three churn mentions in one channel within the window; not across channels nor windows', async () => {
  await send('slack', slack('C2', 'churn risk at Initech'), slack('C3', 'they may churn'));
  await send('slack', slack('C2', 'churn again'), slack('C9', 'all good here'));
  await send('slack', slack('C4', 'Acme wants to churn'), slack('C4', 'churn talk again'));
  await sleep((CHURN_WINDOW_S + 1) * 1000);
  await send('slack', slack('C4', 'third churn mention, a window later'));
  await send('slack', slack('C1', 'Acme wants to churn'), slack('C1', 'no mention here'));
  await send('slack', slack('C1', 'churn churn'), slack('C1', 'churn for the third time'));
  const m = await nextMessage(ws, corrOf('churn_mentions'), 10000 * timeoutScale);
  assert.equal(m.data.key, 'C1');
  assert.equal(m.data.severity, 'warning');
  assert.equal(m.data.events.length, 3);
  assert.ok(m.data.events.every((e) => e.stream === 'slack' && /churn/.test(e.event.event.text)));
  // C4's third mention came a window late, C2 had two: none fired.
  await send('slack', slack('C5', 'churn'), slack('C5', 'churn'), slack('C5', 'churn'));
  assert.deepEqual(await firedUpTo('churn_mentions', 'C5'), []);
});

test('a metric over its threshold while the deal is in negotiation', async () => {
  await send('crm', crm('D6', 'Negotiation'));
  await send('metrics', metric('D7', 35)); // D7 never negotiated
  await send('metrics', metric('D6', 10)); // under the threshold
  await send('metrics', metric('D6', 30));
  const m = await nextMessage(ws, corrOf('metric_in_negotiation'), 10000 * timeoutScale);
  assert.equal(m.data.key, 'D6');
  assert.equal(m.data.events[0].event.value, 30);
  await send('crm', crm('D6', 'Closed Won'));
  await send('metrics', metric('D6', 40)); // no longer in negotiation
  await send('crm', crm('D8', 'Negotiation'));
  await send('metrics', metric('D8', 25));
  assert.deepEqual(await firedUpTo('metric_in_negotiation', 'D8'), []);
});

test('a reload that replaces the instance hands its open sequences over', async () => {
  await send('crm', crm('R1', 'Negotiation'));
  await send('gong', gong('R1', 'A competitor is cheaper.'));
  const mark = d.stderrLines.length;
  await d.writeConfig(config('deal at risk after reload'));
  d.signal('SIGHUP');
  // Per key with Redis up: the new instance reads the hash, a page a turn.
  await d.waitForStderr(/state restored.*instance=deals.*from=redis keys=\d+/, 10000 * timeoutScale, mark);
  await d.waitForStderr(/configuration applied/, 10000 * timeoutScale, mark);
  await send('crm', crm('R1', 'Proposal'));
  const m = await nextMessage(ws, corrOf('deal_at_risk'), 10000 * timeoutScale);
  assert.equal(m.data.key, 'R1');
  assert.equal(m.data.message, 'deal at risk after reload');
  assert.deepEqual(m.data.events.map((e) => e.stream), ['gong', 'crm']);
});

test('a restart finds the open sequences in Redis, key by key', async () => {
  await send('crm', crm('S1', 'Negotiation'));
  await send('gong', gong('S1', 'Our budget was cut.'));
  ws.close();
  assert.deepEqual(await d.stop(), { code: 0, signal: null, killed: false });
  const rec = JSON.parse(await redisCommand(['HGET', STATE_KEY, 'deal_at_risk\x1fS1']));
  assert.equal(rec.stage, 1, 'S1 waits for its second step');
  assert.deepEqual(rec.hits.map((h) => h.stream), ['gong']);
  d = await startDaemon({ yaml: config('deal at risk after reload') });
  await d.waitForStderr(/state restored.*instance=deals.*from=redis/);
  await connect();
  await send('crm', crm('S1', 'Qualification'));
  const m = await nextMessage(ws, corrOf('deal_at_risk'), 10000 * timeoutScale);
  assert.equal(m.data.key, 'S1');
  assert.deepEqual(m.data.events.map((e) => e.stream), ['gong', 'crm']);
});

test('--check names a correlator over an unknown stream, of the wrong kind, or with a bad rule', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'corr-check-'));
  const file = path.join(dir, 'sophia.yaml');
  const check = async (yaml) => {
    await writeFile(file, substitute(yaml, dir));
    return runSophiad(['-c', file, '--check'], { SOPHIA_REDIS_URL: '', SOPHIA_PG_URL: '' });
  };
  const base = `
plugins:
  path: ["@PLUGIN_DIR@"]
  instances:
    metrics: {plugin: metrics}
    deals: {plugin: patterns, options: {rules: [{name: r, window: 1h, steps: [{stream: metrics, key: a}]}]}}
streams:
  metrics: {processor: metrics}
correlators:
`;
  let r = await check(`${base}  deals: {streams: [metrics, nosuch]}
  metrics: {streams: [metrics]}
`);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /sophia\.yaml:10:30: correlators\.deals\.streams: 'nosuch' is not a stream/);
  r = await check(`${base}  metrics: {streams: [metrics]}
`);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /sophia\.yaml:10:3: correlators\.metrics: instance 'metrics' is a processor \(plugin 'metrics'\), not a correlator/);
  r = await check(`
plugins:
  path: ["@PLUGIN_DIR@"]
  instances:
    deals:
      plugin: patterns
      options:
        rules:
          - {name: r, window: 1h, steps: [{stream: s, key: a, match: [{path: x, bigger: 3}]}]}
`);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /rules: rule r: unknown predicate 'bigger' on x/);
  assert.match(r.stderr, /sophia\.yaml:5:5: instance 'deals': plugin 'patterns' .* init failed/);
  // A nested value only goes to an option of type json.
  r = await check(`
plugins:
  path: ["@PLUGIN_DIR@"]
  instances:
    metrics: {plugin: metrics, options: {default_dashboard: {a: 1}}}
`);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /sophia\.yaml:5:61: instance 'metrics': option 'default_dashboard' must be a string, got a mapping/);
  await rm(dir, { recursive: true, force: true });
});
