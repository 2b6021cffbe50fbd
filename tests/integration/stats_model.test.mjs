// One stat model (lib/statdef.h): every figure is declared once and both
// /api/stats and /metrics are written from the declaration. Against a
// daemon with every source of figures (streams with a StatsD source, the
// three cache tiers with write-back, memory, plugins), once it is idle:
// - /metrics is well-formed text: each name has one HELP and one TYPE
//   line before its samples, and a name's samples are contiguous (the
//   family writer groups them);
// - the same figure reads the same in both documents, per stream, per
//   cache tier, per memory type and per plugin instance.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { startDaemon, fetchJson, until } from './lib/daemon.mjs';

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
let keepDir;

before(async () => {
  const port = await freeUdpPort();
  keepDir = await mkdtemp(path.join(process.env.SOPHIA_TEST_TMP || os.tmpdir(), 'stats-model-'));
  const table = `stats_model_${process.pid}_${Date.now().toString(36)}`;
  d = await startDaemon({
    yaml: `
plugins:
  path: ["@PLUGIN_DIR@"]
  instances:
    metrics: {plugin: metrics, options: {default_dashboard: default}}
    wt: {plugin: write_through}
    wb: {plugin: write_back}
cache:
  write:
    default: wt
    prefixes:
      "wb:": wb
streams:
  metrics:
    processor: metrics
    statsd: {listen: "127.0.0.1:${port}"}
  other:
    processor: metrics
memory:
  table: ${table}
  index_path: ${keepDir}/memory.index
`,
  });
  d.statsdPort = port;
});

after(async () => {
  if (d) await d.stop();
  if (keepDir) await rm(keepDir, { recursive: true, force: true });
});

/** {name: [{labels: {k: v}, value}]} and the order names were met in. */
function parseMetrics(text) {
  const samples = new Map();
  const help = new Map();
  const type = new Map();
  const order = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const head = line.match(/^# (HELP|TYPE) (\S+) /);
    if (head) {
      const seen = head[1] === 'HELP' ? help : type;
      assert.ok(!seen.has(head[2]), `a second ${head[1]} line for ${head[2]}`);
      assert.ok(!samples.has(head[2]), `${head[1]} of ${head[2]} after its samples`);
      seen.set(head[2], true);
      continue;
    }
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/);
    assert.ok(m, `a sample line: ${line}`);
    const [, name, body, value] = m;
    const labels = {};
    for (const [, k, v] of (body || '').matchAll(/([a-zA-Z_]+)="((?:[^"\\]|\\.)*)"/g)) labels[k] = v;
    if (!samples.has(name)) {
      order.push(name);
      samples.set(name, []);
    } else {
      assert.equal(order[order.length - 1], name, `the samples of ${name} are not contiguous`);
    }
    samples.get(name).push({ labels, value: Number(value) });
  }
  return { samples, help, type, order };
}

function one(parsed, name, labels = {}) {
  const rows = (parsed.samples.get(name) || []).filter((s) =>
    Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  assert.equal(rows.length, 1, `one ${name}${JSON.stringify(labels)} in /metrics`);
  return rows[0].value;
}

// The figures compared below, read from /api/stats: a snapshot that must
// not move between two reads around the /metrics one.
function figures(s) {
  const out = {};
  for (const [name, st] of Object.entries(s.streams)) {
    for (const k of ['received', 'processed', 'dropped', 'failed', 'rejected', 'filtered',
      'duplicates', 'retried', 'dead', 'queued', 'inflight']) out[`stream.${name}.${k}`] = st[k];
    if (st.sources.statsd) out[`statsd.${name}.refused`] = st.sources.statsd.refused;
  }
  for (const t of ['l1', 'l2', 'l3']) {
    for (const k of ['hits', 'misses', 'writes']) out[`cache.${t}.${k}`] = s.cache[t][k];
    if (t !== 'l1') out[`cache.${t}.errors`] = s.cache[t].errors;
  }
  for (const k of ['entries', 'bytes', 'evictions']) out[`cache.l1.${k}`] = s.cache.l1[k];
  out['wb.dead'] = s.cache.write_back.dead;
  out['wb.unflushed'] = s.cache.write_back.dirty + s.cache.write_back.flushing;
  for (const k of ['stores', 'searches', 'feedback', 'consolidations', 'merged', 'expired', 'rebuilds'])
    out[`memory.${k}`] = s.memory[k];
  for (const [type, n] of Object.entries(s.memory.by_type)) out[`memory.type.${type}`] = n;
  out['reload.reloads'] = s.reload.reloads;
  out['reload.failures'] = s.reload.failures;
  out['reload.plugin_load_failures'] = s.reload.plugin_load_failures;
  return out;
}

test('each figure reads the same in /api/stats and /metrics, and /metrics is well-formed', async () => {
  for (let i = 0; i < 4; i++) {
    const r = await fetchJson(`${d.url}/ingest/metrics`, {
      method: 'POST', body: JSON.stringify({ metric: 'stats.model', value: i }),
    });
    assert.equal(r.status, 202, r.text);
  }
  const sock = dgram.createSocket('udp4');
  await new Promise((res) => sock.send(Buffer.from('stats.model.udp:1|c'), d.statsdPort, '127.0.0.1', res));
  sock.close();
  for (const key of ['sm:k1', 'wb:sm:k2']) {
    const put = await fetchJson(`${d.url}/api/cache/${encodeURIComponent(key)}`, { method: 'PUT', body: '{"value":{"a":1}}' });
    assert.ok(put.status < 300, `PUT ${key}: ${put.status} ${put.text}`);
  }
  await fetchJson(`${d.url}/api/cache/${encodeURIComponent('sm:k1')}`);
  await fetchJson(`${d.url}/api/cache/${encodeURIComponent('sm:missing')}`);
  await until(async () => (await fetchJson(`${d.url}/api/stats`)).body.memory.status === 'ready', 'memory ready');
  const stored = await fetchJson(`${d.url}/api/memory`, {
    body: { content: 'the stat model declares each figure once', memory_type: 'fact', context: { user: 'sm' } },
  });
  assert.equal(stored.status, 201, stored.text);
  await fetchJson(`${d.url}/api/memory/search?q=figure`);

  // Idle: the same figures twice in a row around one /metrics.
  const { stats, metrics } = await until(async () => {
    const a = (await fetchJson(`${d.url}/api/stats`)).body;
    const m = (await fetchJson(`${d.url}/metrics`)).text;
    const b = (await fetchJson(`${d.url}/api/stats`)).body;
    const busy = Object.values(a.streams).some((s) => s.queued || s.inflight) || a.streams.metrics.received < 5;
    return !busy && JSON.stringify(figures(a)) === JSON.stringify(figures(b)) && { stats: a, metrics: m };
  }, 'the figures to settle', 15000, 200);

  const p = parseMetrics(metrics);
  for (const name of p.order) {
    // Plugin counters (sophia_plugin_<name>_total) are named at run time and have no head.
    if (/^sophia_plugin_.*_total$/.test(name) && name !== 'sophia_plugin_load_failures_total') continue;
    assert.ok(p.type.has(name) && p.help.has(name), `HELP and TYPE for ${name}`);
  }

  const f = figures(stats);
  const streamNames = {
    received: 'sophia_stream_events_received_total', processed: 'sophia_stream_events_processed_total',
    dropped: 'sophia_stream_events_dropped_total', failed: 'sophia_stream_events_failed_total',
    rejected: 'sophia_stream_events_rejected_total', filtered: 'sophia_stream_events_filtered_total',
    duplicates: 'sophia_stream_events_duplicate_total', retried: 'sophia_stream_events_retried_total',
    dead: 'sophia_stream_dead_letters_total', queued: 'sophia_stream_queue_depth',
    inflight: 'sophia_stream_inflight',
  };
  for (const stream of ['metrics', 'other']) {
    for (const [k, name] of Object.entries(streamNames))
      assert.equal(one(p, name, { stream }), f[`stream.${stream}.${k}`], `${stream} ${k}`);
  }
  assert.ok(f['stream.metrics.received'] >= 5, 'the events and the StatsD point were counted');
  assert.equal(one(p, 'sophia_statsd_refused_total', { stream: 'metrics' }), f['statsd.metrics.refused']);
  assert.equal((p.samples.get('sophia_statsd_refused_total') || []).length, 1, 'a StatsD row only for the stream that has one');

  for (const tier of ['l1', 'l2', 'l3']) {
    assert.equal(one(p, 'sophia_cache_hits_total', { tier }), f[`cache.${tier}.hits`], `${tier} hits`);
    assert.equal(one(p, 'sophia_cache_misses_total', { tier }), f[`cache.${tier}.misses`], `${tier} misses`);
    assert.equal(one(p, 'sophia_cache_writes_total', { tier }), f[`cache.${tier}.writes`], `${tier} writes`);
    assert.equal(one(p, 'sophia_cache_latency_us', { tier, quantile: '0.99' }) >= 0, true);
    if (tier !== 'l1') {
      assert.equal(one(p, 'sophia_cache_errors_total', { tier }), f[`cache.${tier}.errors`]);
      assert.equal(one(p, 'sophia_cache_tier_up', { tier }), stats.cache[tier].status === 'up' ? 1 : 0);
    }
  }
  assert.ok(f['cache.l3.writes'] >= 1, 'the puts reached L3');
  for (const k of ['entries', 'bytes', 'evictions']) {
    const name = k === 'evictions' ? 'sophia_cache_evictions_total' : `sophia_cache_${k}`;
    assert.equal(one(p, name, { tier: 'l1' }), f[`cache.l1.${k}`], `l1 ${k}`);
    assert.equal(p.samples.get(name).length, 1, `${name}: L1 only`);
  }
  assert.equal(one(p, 'sophia_cache_writeback_dead_total'), f['wb.dead']);
  assert.equal(one(p, 'sophia_cache_dirty_entries'), f['wb.unflushed']);

  const memNames = {
    stores: 'sophia_memory_stores_total', searches: 'sophia_memory_searches_total',
    feedback: 'sophia_memory_feedback_total', consolidations: 'sophia_memory_consolidations_total',
    merged: 'sophia_memory_merged_total', expired: 'sophia_memory_expired_total',
    rebuilds: 'sophia_memory_index_rebuilds_total',
  };
  for (const [k, name] of Object.entries(memNames)) assert.equal(one(p, name), f[`memory.${k}`], `memory ${k}`);
  assert.ok(f['memory.stores'] >= 1 && f['memory.type.fact'] >= 1);
  for (const [type, n] of Object.entries(stats.memory.by_type))
    assert.equal(one(p, 'sophia_memory_count', { type }), n, `memory type ${type}`);
  assert.equal(one(p, 'sophia_memory_access_reads_total'), stats.memory.access.reads ?? 0);
  assert.equal(one(p, 'sophia_memory_access_warmed_total'), stats.memory.access.warmed ?? 0);
  assert.ok(Math.abs(one(p, 'sophia_memory_search_seconds', { quantile: '0.99' }) - stats.memory.p99_us / 1e6) < 1e-6,
    'the search latency, in seconds in /metrics');

  assert.equal(stats.plugins.length, 3);
  for (const pl of stats.plugins)
    assert.equal(one(p, 'sophia_plugin_info', { instance: pl.name, plugin: pl.plugin, version: pl.version, kind: pl.kind }), 1);
  assert.equal(p.samples.get('sophia_plugin_info').length, stats.plugins.length);
  assert.equal(one(p, 'sophia_reloads_total'), f['reload.reloads']);
  assert.equal(one(p, 'sophia_reload_failures_total'), f['reload.failures']);
  assert.equal(one(p, 'sophia_plugin_load_failures_total'), f['reload.plugin_load_failures']);
  assert.equal(one(p, 'sophia_build_info', { version: stats.version }), 1);
});
