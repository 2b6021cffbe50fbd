// Retention and replay (core/ingest/replay.h, SPEC §13) against the real
// Redis of the harness: a durable `metrics` stream with a retention keeps
// the newest `count` processed entries (XTRIM MINID ~, so up to one Redis
// node more); POST /api/streams/metrics/replay with dry_run answers, as
// JSON lines, exactly what sophia-plugin-test prints for the same entries
// with a fresh instance, and changes nothing (a cache key and a WebSocket
// subscriber see nothing); into a named instance the effects are applied
// (the key written again, the publishes heard); bad requests get 400/404
// with what was wrong; DELETE cancels a running replay (a dry run answers
// what it did so far); `sophiad replay` does the same from the command
// line, Ctrl-C included.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import {
  startDaemon, runSophiad, fetchJson, wsConnect, nextMessage, takeMessages, until,
} from './lib/daemon.mjs';
import { redisCommand } from './lib/servers.mjs';

const run = `${process.pid}-${Date.now()}`;
const key = `replay:${run}`;
const KEEP = 100;
const N = 350;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const yaml = `
plugins:
  instances:
    metrics: {plugin: metrics, options: {ttl: 60}}
    metrics_v2: {plugin: metrics, options: {ttl: 60}}
streams:
  metrics:
    processor: metrics
    durable: true
    redis: {key: "${key}", group: g, block: 200ms}
    retention: {count: ${KEEP}}
  young:
    processor: metrics
    redis: {key: "${key}:young", group: g, block: 200ms}
    retention: {age: 1h}
  aged:
    processor: metrics
    redis: {key: "${key}:aged", group: g, block: 200ms}
    retention: {age: 1s}
  plain:
    processor: metrics
    durable: false
`;

let d;
before(async () => { d = await startDaemon({ yaml }); });
after(async () => {
  if (d) await d.stop();
  for (const k of [key, `${key}:dead`, `${key}:young`, `${key}:aged`]) await redisCommand(['DEL', k]).catch(() => {});
});

// Point i: its own dashboard and metric, so every cache key is distinct.
const point = (i) => ({
  metric: `m${i}`, value: i * 10, timestamp: '2024-01-20T10:30:00Z', dashboard_id: `replay${run}`,
});
const cacheKey = (i) => `metric:replay${run}:m${i}`;

function tool(args, input) {
  return new Promise((resolve, reject) => {
    const p = spawn(process.env.SOPHIA_PLUGIN_TEST, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (b) => { out += b; });
    p.stderr.on('data', (b) => { err += b; });
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, err, lines: out.split('\n').filter(Boolean).map((l) => JSON.parse(l)) }));
    p.stdin.end(input);
  });
}

const replay = (stream, body) => fetchJson(`${d.url}/api/streams/${stream}/replay`, { method: 'POST', body });
const ndjson = (text) => text.split('\n').filter(Boolean).map((l) => JSON.parse(l));

test('retention: the newest `count` processed entries stay, older ones are trimmed', async () => {
  for (let i = 0; i < N; i += 50) {
    const body = Array.from({ length: 50 }, (_, k) => point(i + k));
    const r = await fetchJson(`${d.url}/ingest/metrics`, { method: 'POST', body });
    assert.equal(r.status, 202, r.text);
  }
  await until(async () => (await fetchJson(`${d.url}/api/stats`)).body.streams.metrics.processed >= N,
    'all processed', 15000);
  // Trimmed every second: whole nodes, so between KEEP and one node more.
  await until(async () => Number(await redisCommand(['XLEN', key])) < 2 * KEEP, 'trimmed', 10000);
  const len = Number(await redisCommand(['XLEN', key]));
  assert.ok(len >= KEEP, `kept ${len}, retention ${KEEP}`);
  const rest = await redisCommand(['XRANGE', key, '-', '+']);
  const last = JSON.parse(rest[rest.length - 1][1][1]);
  assert.equal(last.metric, `m${N - 1}`, 'the newest entries are the ones kept');
});

test('retention by age: processed entries stay while younger, go once older', async () => {
  for (const stream of ['young', 'aged']) {
    const body = Array.from({ length: 300 }, (_, k) => ({ ...point(k), dashboard_id: `${stream}${run}` }));
    const r = await fetchJson(`${d.url}/ingest/${stream}`, { method: 'POST', body });
    assert.equal(r.status, 202, r.text);
  }
  await until(async () => {
    const s = (await fetchJson(`${d.url}/api/stats`)).body.streams;
    return s.young.processed >= 300 && s.aged.processed >= 300;
  }, 'all processed', 15000);
  // Older than 1 s and processed: trimmed (whole nodes: the newest may stay).
  await until(async () => Number(await redisCommand(['XLEN', `${key}:aged`])) < 150, 'aged trimmed', 10000);
  // Several trim passes later, the hour-old retention still holds all 300
  // (without a retention they would go as soon as processed).
  await sleep(2500);
  assert.equal(Number(await redisCommand(['XLEN', `${key}:young`])), 300);
});

test('replay dry_run: the actions sophia-plugin-test prints, and nothing applied', async () => {
  const entries = await redisCommand(['XRANGE', key, '-', '+']);
  const pick = entries.slice(10, 15); // five in the middle
  const [from, to] = [pick[0][0], pick[4][0]];
  const bodies = pick.map(([, kv]) => kv[1]);

  // The state a dry run must leave alone: one key rewritten, a subscriber.
  const first = JSON.parse(bodies[0]);
  const k = cacheKey(Number(first.metric.slice(1)));
  const put = await fetchJson(`${d.url}/api/cache/${encodeURIComponent(k)}`,
    { method: 'PUT', body: { value: { sentinel: run }, ttl: 60 } });
  assert.ok(put.status < 300, put.text);
  const ws = await wsConnect(d.wsUrl);
  ws.send(JSON.stringify({ type: 'subscribe', subscriptions: ['updates:metric'] }));
  await nextMessage(ws, (m) => m.type === 'subscribed');
  takeMessages(ws);

  const r = await replay('metrics', { from, to, dry_run: true });
  assert.equal(r.status, 200, r.text);
  assert.match(r.headers.get('content-type'), /application\/x-ndjson/);
  const lines = ndjson(r.text);
  const summary = lines.pop();
  assert.equal(summary.replay.state, 'done');
  assert.equal(summary.replay.done, 5);
  assert.equal(summary.replay.total, 5);
  // Each line names its entry; otherwise sophia-plugin-test's lines.
  const ids = new Set(lines.map((l) => l.id));
  assert.deepEqual([...ids], pick.map(([id]) => id));
  const got = lines.map(({ id, ...rest }) => rest);

  const t = await tool([path.join(process.env.SOPHIA_PLUGIN_DIR, 'metrics.so'), '--stream', 'metrics',
    '--options', 'ttl: 60'], `${bodies.join('\n')}\n`);
  assert.equal(t.code, 0, t.err);
  const want = t.lines.filter((l) => 'event' in l);
  assert.ok(want.length > 5, 'the tool printed actions');
  assert.deepEqual(got, want);

  // An RFC 3339 range gives the same entries (ids are milliseconds).
  const iso = (id, end) => new Date(Number(id.split('-')[0]) + (end ? 0 : 0)).toISOString();
  const r2 = await replay('metrics', { from: iso(from), to: iso(to, 1), dry_run: true });
  assert.equal(r2.status, 200, r2.text);
  const ids2 = new Set(ndjson(r2.text).filter((l) => l.id).map((l) => l.id));
  for (const [id] of pick) assert.ok(ids2.has(id), `${id} in the RFC 3339 range`);

  await sleep(300);
  assert.deepEqual(takeMessages(ws).filter((m) => m.topic), [], 'no publish reached a subscriber');
  const after = await fetchJson(`${d.url}/api/cache/${encodeURIComponent(k)}`);
  assert.deepEqual(after.body.value, { sentinel: run }, 'the cache key is unchanged');

  // Into a named instance: applied, the key written again, publishes heard.
  const r3 = await replay('metrics', { from, to, target: 'metrics_v2', rate: 50 });
  assert.equal(r3.status, 202, r3.text);
  assert.equal(r3.body.replay.target, 'metrics_v2');
  await until(async () => (await fetchJson(`${d.url}/api/stats`)).body.streams.metrics.replay.state === 'done',
    'replay done', 10000);
  const st = (await fetchJson(`${d.url}/api/stats`)).body.streams.metrics.replay;
  assert.equal(st.done, 5);
  assert.equal(st.applied, 5);
  assert.equal(st.total, 5);
  const now = await fetchJson(`${d.url}/api/cache/${encodeURIComponent(k)}`);
  assert.deepEqual(now.body.value, { value: first.value, timestamp: first.timestamp });
  await until(() => takeMessages(ws).filter((m) => m.topic === 'updates:metric').length > 0 || undefined,
    'publishes heard', 5000).catch(() => assert.fail('no publish from the applied replay'));
  ws.close();
});

test('replay into a target goes on across a reload that replaces the target', async () => {
  const entries = await redisCommand(['XRANGE', key, '-', '+']);
  const [from, to] = [entries[0][0], entries[59][0]];
  const r = await replay('metrics', { from, to, target: 'metrics_v2', rate: 30 });
  assert.equal(r.status, 202, r.text);
  const stats = async () => (await fetchJson(`${d.url}/api/stats`)).body;
  await until(async () => (await stats()).streams.metrics.replay.done >= 10, 'replay under way', 10000);
  // New options: a new metrics_v2 instance; the replay finds it by name.
  const reloads = (await stats()).reload.reloads;
  await d.writeConfig(yaml.replace('metrics_v2: {plugin: metrics, options: {ttl: 60}}',
    'metrics_v2: {plugin: metrics, options: {ttl: 61}}'));
  d.signal('SIGHUP');
  await until(async () => (await stats()).reload.reloads > reloads, 'reloaded', 10000);
  assert.equal((await stats()).reload.failures, 0);
  assert.ok((await stats()).streams.metrics.replay.done < 60, 'the reload came mid-replay');
  await until(async () => (await stats()).streams.metrics.replay.state !== 'running', 'replay ended', 15000);
  const st = (await stats()).streams.metrics.replay;
  assert.equal(st.state, 'done', JSON.stringify(st));
  assert.equal(st.applied, 60);
  assert.equal(st.failed, 0);
});

test('replay: bad ranges, unknown stream or target get 400/404 saying what', async () => {
  const cases = [
    ['nope', { dry_run: true }, 404, 'unknown_stream', /no stream 'nope'/],
    ['metrics', { dry_run: true, from: 'yesterday' }, 400, 'bad_range', /'from'.*neither a Redis stream id/],
    ['metrics', { dry_run: true, from: '200-0', to: '100-0' }, 400, 'bad_range', /after 'to'/],
    ['metrics', { target: 'ghost' }, 404, 'unknown_target', /'ghost'/],
    ['metrics', {}, 400, 'bad_target', /dry_run.*target/],
    ['metrics', { dry_run: true, rate: -1 }, 400, 'bad_rate', /rate/],
    ['plain', { dry_run: true }, 400, 'bad_replay', /neither durable nor fed by a Redis stream/],
  ];
  for (const [stream, body, status, code, re] of cases) {
    const r = await replay(stream, body);
    assert.equal(r.status, status, `${JSON.stringify(body)}: ${r.text}`);
    assert.equal(r.body.error.code, code);
    assert.match(r.body.error.message, re);
  }
  const get = await fetchJson(`${d.url}/api/streams/metrics/replay`);
  assert.equal(get.status, 405);
  assert.match(get.body.error.message, /POST \(start\) or a DELETE \(cancel\)/);
});

test('sophiad replay: the dry run from the command line', async () => {
  const entries = await redisCommand(['XRANGE', key, '-', '+']);
  const [from, to] = [entries[0][0], entries[2][0]];
  const r = await runSophiad(['replay', 'metrics', '--from', from, '--to', to, '--dry-run',
    '--listen', `127.0.0.1:${d.port}`]);
  assert.equal(r.code, 0, r.stderr);
  const lines = ndjson(r.stdout);
  assert.deepEqual([...new Set(lines.filter((l) => l.verdict).map((l) => l.id))], entries.slice(0, 3).map(([id]) => id));
  const bad = await runSophiad(['replay', 'nope', '--dry-run', '--listen', `127.0.0.1:${d.port}`]);
  assert.equal(bad.code, 1);
  assert.match(bad.stderr, /404.*no stream 'nope'/);
});

test('replay cancel: DELETE stops a running replay, a dry run answers what it did so far', async () => {
  const entries = await redisCommand(['XRANGE', key, '-', '+']);
  const [from, to] = [entries[0][0], entries[59][0]];
  const stats = async () => (await fetchJson(`${d.url}/api/stats`)).body.streams.metrics.replay;
  const r = await replay('metrics', { from, to, target: 'metrics_v2', rate: 20 });
  assert.equal(r.status, 202, r.text);
  await until(async () => (await stats()).done >= 3, 'replay under way', 10000);
  const del = await fetchJson(`${d.url}/api/streams/metrics/replay`, { method: 'DELETE' });
  assert.equal(del.status, 200, del.text);
  assert.equal(del.body.replay.state, 'cancelled');
  assert.ok(del.body.replay.done < 60, JSON.stringify(del.body.replay));
  const stopped = del.body.replay.done;
  await sleep(500); // at 20/s, ten more events had it gone on
  assert.ok((await stats()).done <= stopped + 1, 'the replay stopped'); // + the event settling
  assert.equal((await stats()).state, 'cancelled');
  const again = await fetchJson(`${d.url}/api/streams/metrics/replay`, { method: 'DELETE' });
  assert.equal(again.status, 404);
  assert.equal(again.body.error.code, 'no_replay');
  assert.match(again.body.error.message, /no replay of stream 'metrics' is running/);

  // A dry run cut short: its answer has the lines so far and the summary.
  const dry = replay('metrics', { from, to, dry_run: true, rate: 20 });
  await until(async () => (await stats())?.dry_run && (await stats()).done >= 3, 'dry run under way', 10000);
  assert.equal((await fetchJson(`${d.url}/api/streams/metrics/replay`, { method: 'DELETE' })).status, 200);
  const lines = ndjson((await dry).text);
  const summary = lines.pop().replay;
  assert.equal(summary.state, 'cancelled');
  assert.ok(summary.done >= 3 && summary.done < 60, JSON.stringify(summary));
  assert.equal(lines.filter((l) => l.verdict).length, summary.done);
});

test('sophiad replay: Ctrl-C cancels the replay it follows; --cancel stops one', async () => {
  const entries = await redisCommand(['XRANGE', key, '-', '+']);
  const [from, to] = [entries[0][0], entries[59][0]];
  const listen = ['--listen', `127.0.0.1:${d.port}`];
  const stats = async () => (await fetchJson(`${d.url}/api/stats`)).body.streams.metrics.replay;
  let proc;
  const cli = runSophiad(['replay', 'metrics', '--from', from, '--to', to, '--target', 'metrics_v2',
    '--rate', '20', ...listen], {}, { onSpawn: (p) => { proc = p; } });
  await until(async () => (await stats())?.state === 'running' && (await stats()).done >= 3, 'replay under way', 10000);
  proc.kill('SIGINT');
  const r = await cli;
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /cancelling/);
  assert.equal(JSON.parse(r.stdout.trim().split('\n').pop()).state, 'cancelled');
  assert.equal((await stats()).state, 'cancelled');

  const none = await runSophiad(['replay', 'metrics', '--cancel', ...listen]);
  assert.equal(none.code, 1);
  assert.match(none.stderr, /HTTP 404: no replay of stream 'metrics' is running/);
  await until(async () => (await replay('metrics', { from, to, target: 'metrics_v2', rate: 20 })).status === 202,
    'a new replay once the cancelled one settled', 5000);
  const stop = await runSophiad(['replay', 'metrics', '--cancel', ...listen]);
  assert.equal(stop.code, 0, stop.stderr);
  assert.equal(JSON.parse(stop.stdout).replay.state, 'cancelled');
});

test('replay: the bearer tokens of /api, also for sophiad replay (token from the configuration)', async () => {
  const t = await startDaemon({
    yaml: `server:\n  tokens:\n    secret_env: SOPHIA_INGEST_TOKENS\n${yaml}`,
    env: { SOPHIA_INGEST_TOKENS: 'alpha,beta' },
  });
  try {
    const url = `${t.url}/api/streams/metrics/replay`;
    const none = await fetchJson(url, { method: 'POST', body: { dry_run: true } });
    assert.equal(none.status, 401);
    const ok = await fetchJson(url, { method: 'POST', body: { dry_run: true }, token: 'beta' });
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ndjson(ok.text).pop().replay.state, 'done');
    const cli = await runSophiad(['replay', 'metrics', '--dry-run', '-c', t.configPath, '--listen', `127.0.0.1:${t.port}`],
      { SOPHIA_INGEST_TOKENS: 'alpha,beta' });
    assert.equal(cli.code, 0, cli.stderr);
    assert.equal(ndjson(cli.stdout).pop().replay.state, 'done');
    const refused = await runSophiad(['replay', 'metrics', '--dry-run', '--token', 'wrong', '--listen', `127.0.0.1:${t.port}`]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /HTTP 401/);
  } finally {
    await t.stop();
  }
});
