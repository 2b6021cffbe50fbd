// sophia-plugin-test: a plugin run without a daemon, through the daemon's
// own loader and host table, its actions printed as JSON lines. Used here
// on the bundled metrics processor with the samples in tests/data (so this is
// also a test of that processor), on the SDK test plugins for the ABI
// rules and for timers (on the virtual clock `#advance` moves), and on
// `actions` for the in-memory cache that cache_peek reads.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

const TOOL = process.env.SOPHIA_PLUGIN_TEST;
const PLUGINS = process.env.SOPHIA_PLUGIN_DIR;
const TEST_PLUGINS = process.env.SOPHIA_TEST_PLUGIN_DIR;
const SAMPLES = path.join(process.env.SOPHIA_SOURCE_DIR, 'tests', 'data');
const NOW_US = 1705746600000000; // 2024-01-20T10:30:00Z

/** Runs the tool; resolves to {code, stdout, stderr, lines (parsed stdout)}. */
function tool(args, input = '') {
  assert.ok(TOOL, 'SOPHIA_PLUGIN_TEST is not set: run through ctest');
  return new Promise((resolve, reject) => {
    const p = spawn(TOOL, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (b) => { out += b; });
    p.stderr.on('data', (b) => { err += b; });
    p.on('error', reject);
    p.on('close', (code) => {
      const lines = out.split('\n').filter((l) => l).map((l) => JSON.parse(l));
      resolve({ code, stdout: out, stderr: err, lines });
    });
    // A refused plugin exits before reading stdin: EPIPE is its answer, not ours.
    p.stdin.on('error', (e) => { if (e.code !== 'EPIPE') reject(e); });
    p.stdin.end(input);
  });
}

// A series' labels in its cache key, as the metrics processor writes them.
const labelKey = (l) => (l ? `{${Object.keys(l).sort().map((k) => `${k}=${l[k]}`).join(',')}}` : '');

test('metrics: the shared samples become publishes and cache puts, one verdict per event', async () => {
  const input = readFileSync(path.join(SAMPLES, 'metrics.ndjson'), 'utf8');
  const r = await tool([path.join(PLUGINS, 'metrics.so'), '--stream', 'metrics',
    '--options', 'ttl: 60', '--now-us', String(NOW_US)], input);
  assert.equal(r.code, 0, r.stderr);
  const points = input.split('\n').filter((l) => l).map((l) => JSON.parse(l));
  const expected = [];
  points.forEach((p, i) => {
    const data = { metric: p.metric, value: p.value, timestamp: p.timestamp };
    if (p.labels) data.labels = p.labels;
    expected.push({
      event: i + 1, action: 'publish', type: 'metric', dashboard_id: p.dashboard_id,
      topics: ['updates:metric', `dashboard:${p.dashboard_id}`, 'stream:metrics'], data,
    });
    expected.push({
      event: i + 1, action: 'cache_put', key: `metric:${p.dashboard_id}:${p.metric}${labelKey(p.labels)}`,
      value: { value: p.value, timestamp: p.timestamp }, ttl: 60,
      tags: ['metrics', `dashboard:${p.dashboard_id}`],
    });
    expected.push({ event: i + 1, verdict: 'ok', actions: 2 });
  });
  expected.push({ counter: 'points', instance: 'test', value: points.length });
  assert.deepEqual(r.lines, expected);
});

test('metrics: a point without a value is an error verdict with no actions; a timestamp-less one gets --now-us', async () => {
  const r = await tool([path.join(PLUGINS, 'metrics.so'), '--options', '{default_dashboard: main}',
    '--now-us', String(NOW_US)],
  '{"metric":"x"}\n\n[{"metric":"y","value":2}]\n');
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.lines[0], { event: 1, verdict: 'error', actions: 0 });
  assert.match(r.stderr, /bad metric point/);
  assert.equal(r.lines[1].action, 'publish');
  assert.deepEqual(r.lines[1].topics, ['updates:metric', 'dashboard:main', 'stream:test']);
  assert.equal(r.lines[1].data.timestamp, '2024-01-20T10:30:00Z');
  assert.deepEqual(r.lines[3], { event: 2, verdict: 'ok', actions: 2 });
});

test('bad options are refused with FILE:LINE:COL, as sophiad would; exit 1', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'sophia-ptr-'));
  try {
    const file = path.join(dir, 'opts.yaml');
    await writeFile(file, 'default_dashboard: main\nbogus: 1\nttl: soon\n');
    const r = await tool([path.join(PLUGINS, 'metrics.so'), '--options', file]);
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, new RegExp(`^${file}:2:1: instance 'test': unknown option 'bogus'`, 'm'));
    assert.match(r.stderr, new RegExp(`^${file}:3:6: instance 'test': option 'ttl' must be a number, got 'soon'`, 'm'));
    const y = await tool([path.join(PLUGINS, 'metrics.so'), '--options', 'a: [1\n']);
    assert.equal(y.code, 1);
    assert.match(y.stderr, /^<options>:\d+:\d+: YAML: /m);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('ABI: an older-minor descriptor loads; newer minor and other major are refused naming both versions', async () => {
  const old = await tool([path.join(TEST_PLUGINS, 'abi_1_0.so')], '{"a":1}\n');
  assert.equal(old.code, 0, old.stderr);
  assert.deepEqual(old.lines.at(-1), { event: 1, verdict: 'ok', actions: 1 });

  // The host's own minor, as sdk.h defines it.
  const sdkh = readFileSync(path.join(process.env.SOPHIA_SOURCE_DIR, 'sdk/include/sophia/sdk.h'), 'utf8');
  const minor = Number(sdkh.match(/#define SOPHIA_SDK_VERSION_MINOR (\d+)/)[1]);
  const newer = await tool([path.join(TEST_PLUGINS, 'abi_minor_newer.so')]);
  assert.equal(newer.code, 1);
  assert.ok(newer.stderr.includes(`needs SDK 1.${minor + 1}, this sophiad provides SDK 1.${minor}`),
    newer.stderr);
  const major = await tool([path.join(TEST_PLUGINS, 'abi_major2.so')]);
  assert.equal(major.code, 1);
  assert.ok(major.stderr.includes(`built for SDK 2.0; this sophiad provides SDK 1.${minor} (major differs)`),
    major.stderr);
  const missing = await tool([path.join(TEST_PLUGINS, 'nonexistent.so')]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /cannot load plugin/);
});

test('cache_peek sees the puts of earlier ok events, not of failed ones; invalidations apply', async () => {
  const ev = (o) => JSON.stringify(o);
  const input = [
    ev({ op: 'incr', key: 'n' }),
    ev({ op: 'incr', key: 'n' }),
    ev({ ops: [{ op: 'incr', key: 'n' }, { op: 'fail' }] }), // discarded
    ev({ op: 'incr', key: 'n' }),
    ev({ op: 'put', key: 'm', value: 41, tags: ['grp'] }),
    ev({ op: 'deltag', tag: 'grp' }),
    ev({ op: 'incr', key: 'm' }),
    ev({ op: 'put', key: 'q', value: 41 }),
    ev({ op: 'incr', key: 'q' }),
    ev({ op: 'del', key: 'n' }),
    ev({ op: 'incr', key: 'n' }),
  ].join('\n');
  const r = await tool([path.join(TEST_PLUGINS, 'actions.so')], input);
  assert.equal(r.code, 0, r.stderr);
  const puts = r.lines.filter((l) => l.action === 'cache_put').map((l) => [l.event, l.key, l.value]);
  assert.deepEqual(puts, [
    [1, 'n', 1], [2, 'n', 2], [3, 'n', 3], [4, 'n', 3], // event 3 failed: not applied
    [5, 'm', 41], [7, 'm', 1], // dropped with its tag
    [8, 'q', 41], [9, 'q', 42],
    [11, 'n', 1], // invalidated by key
  ]);
  const verdicts = r.lines.filter((l) => 'verdict' in l).map((l) => l.verdict);
  assert.deepEqual(verdicts, ['ok', 'ok', 'error', 'ok', 'ok', 'ok', 'ok', 'ok', 'ok', 'ok', 'ok']);
});

test('memory_store calls are printed in call order; cache_get reads the in-memory cache', async () => {
  const input = [
    JSON.stringify({ ops: [
      { op: 'put', key: 'a', value: 1 },
      { op: 'remember', content: 'likes tea', memory_type: 'user_preference', context: { user: 'u1' }, importance: 0.8 },
      { op: 'publish', data: {} },
      { op: 'remember', content: 'plain' },
    ] }),
    JSON.stringify({ op: 'get', key: 'a' }),
    JSON.stringify({ op: 'get', key: 'nope' }),
    JSON.stringify({ op: 'remember' }), // no content: EINVAL -> error
    JSON.stringify({ op: 'get_ex', key: 'a' }), // SDK 1.1, the same map
  ].join('\n');
  const r = await tool([path.join(TEST_PLUGINS, 'actions.so')], input);
  assert.equal(r.code, 0, r.stderr);
  const strip = ({ event, ...rest }) => [event, rest.action ?? rest.verdict];
  assert.deepEqual(r.lines.map(strip), [
    [1, 'cache_put'], [1, 'memory_store'], [1, 'publish'], [1, 'memory_store'], [1, 'ok'],
    [2, 'cache_put'], [2, 'ok'], [3, 'cache_put'], [3, 'ok'], [4, 'error'],
    [5, 'cache_put'], [5, 'ok'],
  ]);
  assert.deepEqual(r.lines[1], {
    event: 1, action: 'memory_store', content: 'likes tea', memory_type: 'user_preference',
    context: { user: 'u1' }, importance: 0.8,
  });
  assert.deepEqual(r.lines[3], { event: 1, action: 'memory_store', content: 'plain', memory_type: 'fact', context: {} });
  assert.deepEqual(r.lines[4], { event: 1, verdict: 'ok', actions: 4 });
  assert.deepEqual([r.lines[5].key, r.lines[5].value], ['a:copy', 1]);
  assert.deepEqual([r.lines[7].key, r.lines[7].value], ['nope:copy', 'miss']);
  assert.deepEqual([r.lines[10].key, r.lines[10].value], ['a:copy', 1]);
});

test('a line that is not JSON is reported with its line number; the rest still runs; exit 1', async () => {
  const r = await tool([path.join(TEST_PLUGINS, 'actions.so')],
    '{"op":"drop"}\n{"op": nope}\n{"op":"retry"}\n');
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^<stdin>:2:\d+: not JSON/m);
  const verdicts = r.lines.filter((l) => 'verdict' in l).map((l) => [l.event, l.verdict, l.actions]);
  assert.deepEqual(verdicts, [[1, 'drop', 1], [2, 'retry', 1]]);
});

test('usage errors exit 2', async () => {
  const r = await tool([]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /usage: sophia-plugin-test PLUGIN\.so/);
  const bad = await tool([path.join(PLUGINS, 'metrics.so'), '--now-us', 'later']);
  assert.equal(bad.code, 2);
});

test('timers run on the virtual clock that #advance moves: due ones fire in order, repeats as often as due', async () => {
  const r = await tool([path.join(TEST_PLUGINS, 'window.so'), '--options', 'window_s: 10',
    '--now-us', String(NOW_US)],
  '{"v":1}\n{"v":2}\n#advance 9.5\n#advance 0.5\n{"v":4}\n#advance 25\n#advance later\n');
  assert.equal(r.code, 1, 'a bad #advance is an input error');
  assert.match(r.stderr, /^<stdin>:7: #advance wants seconds/m);
  const close = (value, count) => ({
    action: 'publish', type: 'metric', topics: ['updates:metric', 'dashboard:win'], dashboard_id: 'win',
    data: { metric: 'window_sum', value, count, label: 'w' },
  });
  assert.deepEqual(r.lines, [
    { event: 1, verdict: 'ok', actions: 0 },
    { event: 2, verdict: 'ok', actions: 0 },
    // 9.5 s: nothing due yet; at 10 s the window of events 1 and 2 closes
    { timer: 1, ...close(3, 2) },
    { timer: 1, at_us: NOW_US + 10e6, rc: 0, actions: 1 },
    { event: 3, verdict: 'ok', actions: 0 },
    // 25 s more: due at 20 s (event 3's window) and at 30 s (empty: the
    // first close's reset committed, so nothing is counted twice)
    { timer: 1, ...close(4, 1) },
    { timer: 1, at_us: NOW_US + 20e6, rc: 0, actions: 1 },
    { timer: 1, at_us: NOW_US + 30e6, rc: 0, actions: 0 },
    { counter: 'windows_closed', instance: 'test', value: 2 },
  ]);
});

test('a processor\'s prefetch (SDK 1.1) is answered from the in-memory cache, one line a key', async () => {
  const ev = (id, stage) => JSON.stringify({
    eventId: id, subscriptionType: 'deal.propertyChange', objectId: 5, propertyName: 'dealstage', propertyValue: stage,
  });
  const r = await tool([path.join(PLUGINS, 'crm.so'), '--now-us', String(NOW_US)],
    `${ev(1, 'qualified')}\n${ev(2, 'closedwon')}\n`);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(r.lines.filter((l) => 'prefetch' in l), [
    { event: 1, prefetch: 'crm:deal:hubspot:5', found: false },
    { event: 2, prefetch: 'crm:deal:hubspot:5', found: true },
  ]);
  const stages = r.lines.filter((l) => l.data?.kind === 'deal_stage').map((l) => [l.event, l.data.from, l.data.to]);
  assert.deepEqual(stages, [[1, false, 'qualified'], [2, 'qualified', 'closedwon']]);
  // Before its actions, not counted among them.
  assert.equal(r.lines.findIndex((l) => l.event === 2), r.lines.findIndex((l) => l.prefetch && l.event === 2));
  // deal_stage, deal_won, tag invalidation, record put, and crm 1.3's pipeline totals (2 stages x 2 metrics).
  assert.deepEqual(r.lines.find((l) => l.event === 2 && l.verdict), { event: 2, verdict: 'ok', actions: 8 });
});
