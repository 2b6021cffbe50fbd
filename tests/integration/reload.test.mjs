// Hot reload (SPEC §9) under load: a load generator posts a numbered
// sequence of events while SIGHUP swaps between two configurations 20 times
// (SOPHIA_RELOAD_ROUNDS=100 for a leak hunt under ASan) and the processor's
// .so is replaced (by rename) with a rebuilt one of another version. Every
// numbered event must reach the WebSocket client exactly once, the client
// must stay connected, the processors' state must survive their upgrades
// (export_state/import_state: the test processor's running count, the
// metrics plugin's rolling window), and /api/stats must show the new
// version. Broken reloads (bad YAML, wrong ABI, failing init) must leave
// the running set working.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { copyFile, mkdtemp, rename, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { startDaemon, fetchJson, wsConnect, nextMessage, timeoutScale } from './lib/daemon.mjs';

const TEST_PLUGINS = process.env.SOPHIA_TEST_PLUGIN_DIR;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// Even, so the run ends on config A and version 2 (e.g. 100 for a leak hunt).
const ROUNDS = 2 * Math.ceil((Number(process.env.SOPHIA_RELOAD_ROUNDS) || 20) / 2);

let d;
let ws;
let pluginDir;
let closed = false;
const got = new Map(); // seq -> times received
const receipts = []; // ms timestamps of each receipt from `rl`
let lastN = 0; // the processor's running count, as published

// Installs a version the way a deploy should: copy aside, rename over.
async function install(version) {
  const tmp = path.join(pluginDir, `.reloadable.${version}.tmp`);
  await copyFile(path.join(TEST_PLUGINS, `reload_${version}.so`), tmp);
  await rename(tmp, path.join(pluginDir, 'reloadable.so'));
}

// A: streams ev + other; B: streams ev + extra, echo with other options.
function config(which, extraInstance = '') {
  const b = which === 'B';
  return `
websocket: {max_queue: 100000}
plugins:
  path: ["${pluginDir}", "@TEST_PLUGIN_DIR@", "@PLUGIN_DIR@"]
  instances:
    rl:
      plugin: reloadable
      options: {topic: rl}
    echo:
      plugin: echo
      options: {topic: echoed, count: ${b ? 7 : 3}}
    m:
      plugin: metrics
      options: {windows: [600], thresholds: ["other_metric>${b ? 10 : 20}"]}
${extraInstance}
streams:
  ev: {processor: rl, queue_size: 100000}
  pts: {processor: m}
  ${b ? 'extra' : 'other'}: {processor: echo}
`;
}

async function stats() {
  return (await fetchJson(`${d.url}/api/stats`)).body;
}

async function waitReloadCount(key, want) {
  const deadline = Date.now() + 10000 * timeoutScale;
  for (;;) {
    const s = await stats();
    if (s.reload[key] >= want) return s;
    if (Date.now() > deadline) throw new Error(`reload.${key} stayed ${s.reload[key]} < ${want}`);
    await sleep(10);
  }
}

async function reload(yaml, key = 'reloads') {
  const before = (await stats()).reload[key];
  await d.writeConfig(yaml);
  d.signal('SIGHUP');
  return waitReloadCount(key, before + 1);
}

async function post(stream, events) {
  const res = await fetchJson(`${d.url}/ingest/${stream}`, {
    method: 'POST', body: events.map((e) => JSON.stringify(e)).join('\n'),
  });
  assert.equal(res.status, 202, `ingest answered ${res.status}`);
}

before(async () => {
  pluginDir = await mkdtemp(path.join(process.env.SOPHIA_TEST_TMP || os.tmpdir(), 'sophia-rl-'));
  await install('v1');
  d = await startDaemon({ yaml: config('A') });
  ws = await wsConnect(d.wsUrl);
  ws.on('close', () => { closed = true; });
  ws.on('message', (raw) => {
    const m = JSON.parse(raw);
    if (typeof m.data?.seq !== 'number' || !m.data.v) return; // rl's
    got.set(m.data.seq, (got.get(m.data.seq) || 0) + 1);
    receipts.push(performance.now());
    lastN = Math.max(lastN, m.data.n);
  });
  ws.send(JSON.stringify({ type: 'subscribe', subscriptions: ['updates:*', 'dashboard:*'] }));
  await nextMessage(ws, 'subscribed');
});

after(async () => {
  ws?.close();
  if (d) assert.deepEqual(await d.stop(), { code: 0, signal: null, killed: false }, 'clean exit');
  if (pluginDir) await rm(pluginDir, { recursive: true, force: true });
});

function maxGap(from, to) {
  let g = 0;
  for (let i = from + 1; i < to; i++) g = Math.max(g, receipts[i] - receipts[i - 1]);
  return g;
}

test(`${ROUNDS} reloads under load: every event once, client connected, new version`, async () => {
  const TOTAL = 2000;
  const BATCH = 10;
  let seq = 0;
  let storming = true;
  let baselineEnd = -1;
  const gen = (async () => {
    while (seq < TOTAL || storming) {
      const batch = [];
      for (let i = 0; i < BATCH; i++) batch.push({ seq: seq++ });
      await post('ev', batch);
      await sleep(10);
    }
  })();
  // Rolling samples the metrics instance must carry through its upgrades.
  const point = (value) => ({ metric: 'rl_m', value, dashboard_id: 'rl' });
  await post('pts', [1, 2, 3, 4, 5].map(point));
  // A quiet second first: the baseline for the pause measurement.
  await sleep(1000);
  baselineEnd = receipts.length;
  const stormStart = receipts.length;
  for (let i = 0; i < ROUNDS; i++) {
    await install(i % 2 ? 'v2' : 'v1');
    await reload(config(i % 2 ? 'A' : 'B'));
    await post(i % 2 ? 'other' : 'extra', [{ i }]); // the new stream accepts
  }
  storming = false;
  const stormEnd = receipts.length;
  await gen;
  const deadline = Date.now() + 10000 * timeoutScale;
  while (got.size < seq && Date.now() < deadline) await sleep(20);

  const missing = [];
  for (let i = 0; i < seq; i++) if (!got.has(i)) missing.push(i);
  const dup = [...got].filter(([, n]) => n !== 1).map(([s]) => s);
  assert.deepEqual(missing.slice(0, 20), [], `${missing.length} events missing`);
  assert.deepEqual(dup.slice(0, 20), [], `${dup.length} events duplicated`);
  assert.equal(got.size, seq);
  assert.equal(closed, false, 'the WebSocket client was disconnected');
  // The count went through every upgrade without restarting from zero.
  assert.equal(lastN, seq);

  const s = await stats();
  assert.ok(s.reload.reloads >= ROUNDS);
  const rl = s.plugins.find((p) => p.name === 'rl');
  assert.equal(rl.version, '2.0.0');
  assert.equal(rl.reload_count, ROUNDS);
  assert.match(rl.file, /reloadable\.so$/);
  const echo = s.plugins.find((p) => p.name === 'echo');
  assert.equal(echo.reload_count, ROUNDS); // options changed every time
  assert.equal(s.streams.ev.received, seq);
  assert.equal(s.streams.ev.processed, seq);
  assert.ok(s.streams.other, 'config A is running again');
  assert.equal(s.streams.extra, undefined, 'the removed stream is gone');

  // The metrics window still holds the 5 points sent before the storm.
  assert.equal(s.plugins.find((p) => p.name === 'm').reload_count, ROUNDS);
  await post('pts', [point(6)]);
  const agg = await nextMessage(ws, (m) => m.data?.kind === 'aggregate' && m.data.metric === 'rl_m'
    && m.data.max === 6);
  assert.equal(agg.data.count, 6);
  assert.equal(agg.data.sum, 21);

  const metrics = await (await fetch(`${d.url}/metrics`)).text();
  assert.match(metrics, /^sophia_reloads_total (\d+)$/m);
  assert.match(metrics, /sophia_plugin_info\{instance="rl",plugin="reloadable",version="2\.0\.0"/);
  // The daemon logs how long each reload held the loop (prepare + commit).
  let held = 0;
  for (const l of d.stderrLines) {
    const m = /configuration applied.* prepare_us=(\d+) commit_us=(\d+)/.exec(l);
    if (m) held = Math.max(held, Number(m[1]) + Number(m[2]));
  }
  assert.ok(held > 0, 'reloads log their duration');
  console.log(`reload: loop held at most ${(held / 1000).toFixed(1)} ms; `
    + `max gap between WS receipts ${maxGap(0, baselineEnd).toFixed(1)} ms without reloads, `
    + `${maxGap(stormStart, stormEnd).toFixed(1)} ms during ${ROUNDS} reloads (${seq} events)`);
});

test('an unchanged reload keeps instances and their state', async () => {
  const before = (await stats()).plugins.find((p) => p.name === 'rl');
  await reload(config('A'));
  const now = (await stats()).plugins.find((p) => p.name === 'rl');
  assert.equal(now.reload_count, before.reload_count);
  assert.equal(now.loaded_at, before.loaded_at);
});

async function stillProcessing(from) {
  await post('ev', [{ seq: from }]);
  const m = await nextMessage(ws, (x) => x.data?.v && x.data.seq === from);
  assert.equal(m.data.v, '2.0.0');
}

test('broken reloads keep the running set', async () => {
  const cases = [
    ['broken YAML', 'plugins: [unclosed\n  streams: {', /sophia\.yaml:\d+:\d+: /],
    ['wrong ABI', config('B', '    bad: {plugin: abi_major2}'), /sophia\.yaml:\d+:\d+: .*ABI|abi/i],
    ['init fails', config('B', '    bad: {plugin: init_fails}'), /sophia\.yaml:\d+:\d+: .*init failed/],
  ];
  let seq = 100000;
  for (const [what, yaml, re] of cases) {
    const before = await stats();
    const s = await reload(yaml, 'failures');
    assert.equal(s.reload.failures, before.reload.failures + 1, what);
    assert.equal(s.reload.reloads, before.reload.reloads, what);
    assert.match(s.reload.last_error, re, what);
    assert.ok(s.reload.last_at > 0);
    assert.ok(s.streams.other && !s.streams.extra, `${what}: config A still runs`);
    await stillProcessing(seq++);
  }
  const metrics = await (await fetch(`${d.url}/metrics`)).text();
  assert.match(metrics, /^sophia_reload_failures_total [3-9]$/m);
  assert.equal(closed, false);
});
