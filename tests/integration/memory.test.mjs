// Contextual memory end to end (SPEC §8): a real sophiad on the shared
// PostgreSQL, storing, searching (faiss + full-text, fused), feedback,
// restarts with and without the index file, the dedup and decay
// consolidator plugins, and bad input.
//
// Isolation: each daemon gets a table of its own (memory.table) and an
// index file in its own temp directory, so no test sees another's rows.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import {
  startDaemon, fetchJson, timeoutScale, wsConnect, sendJson, nextMessage,
} from './lib/daemon.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const uniq = () => `mem_${process.pid}_${Date.now().toString(36)}_${Math.floor(Math.random() * 1e6)}`;

function memYaml(table, indexPath, extra = '') {
  return `
memory:
  table: ${table}
  index_path: ${indexPath}
  half_life: 3s
  max_content: 2KiB
${extra}`;
}

async function store(d, content, context, more = {}) {
  const res = await fetchJson(`${d.url}/api/memory`, {
    body: { content, memory_type: 'fact', context, ...more },
  });
  assert.equal(res.status, 201, res.text);
  assert.ok(Number.isInteger(res.body.id), res.text);
  return res.body.id;
}

async function search(d, q, params = {}) {
  const u = new URL(`${d.url}/api/memory/search`);
  u.searchParams.set('q', q);
  for (const [k, v] of Object.entries(params)) u.searchParams.set(k, String(v));
  const res = await fetchJson(u.toString());
  assert.equal(res.status, 200, res.text);
  return res.body.results;
}

async function waitFor(fn, what, ms = 10000 * timeoutScale) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

const memStats = async (d) => (await fetchJson(`${d.url}/api/stats`)).body.memory;

let d;
let table;
let indexPath;
let keepDir;
const corpus = {};

before(async () => {
  table = uniq();
  // Outside the daemon's own temp dir, which goes away with the daemon.
  keepDir = await mkdtemp(path.join(process.env.SOPHIA_TEST_TMP || os.tmpdir(), 'memory-'));
  indexPath = path.join(keepDir, 'memory.index');
  d = await startDaemon({ yaml: memYaml(table, indexPath) });
  const ctx = { user: 'alice', test: 'retrieval' };
  corpus.k8s = await store(d, 'The Kubernetes cluster upgrade is scheduled for Friday night after the release freeze', ctx);
  corpus.tea = await store(d, 'Alice likes green tea with honey in the morning', ctx);
  corpus.rare = await store(d, 'Renewal call with Zylberstein Logistics about the enterprise contract', ctx);
  corpus.deal = await store(d, 'The Acme deal moved to negotiation stage with a revised budget', ctx);
  corpus.bob = await store(d, 'Bob wants the Kubernetes cluster upgrade moved to Friday night', { user: 'bob', test: 'retrieval' });
});

after(async () => {
  if (d) await d.stop();
  if (keepDir) await rm(keepDir, { recursive: true, force: true });
});

test('a memory is found first for its own words', async () => {
  const r = await search(d, 'Kubernetes cluster upgrade scheduled Friday', { 'context.user': 'alice' });
  assert.equal(r[0].id, corpus.k8s);
  const parts = r[0].score_parts;
  for (const k of ['rrf', 'vector', 'text', 'recency', 'importance', 'frequency']) {
    assert.equal(typeof parts[k], 'number', `score_parts.${k}`);
  }
  assert.ok(parts.vector > 0.5 && parts.text > 0, JSON.stringify(parts));
  assert.equal(r[0].memory_type, 'fact');
  assert.deepEqual(r[0].context, { user: 'alice', test: 'retrieval' });
  for (let i = 1; i < r.length; i++) assert.ok(r[i - 1].score >= r[i].score, 'best first');
});

test('a re-ordered paraphrase with shared terms finds it first', async () => {
  const r = await search(d, 'on Friday night we upgrade the cluster', { 'context.user': 'alice' });
  assert.equal(r[0].id, corpus.k8s);
});

test('a misspelled query still finds it (character n-grams)', async () => {
  const r = await search(d, 'kubernetis clustr upgarde', { 'context.user': 'alice', k: 3 });
  assert.equal(r[0].id, corpus.k8s);
  assert.equal(r[0].score_parts.text, 0, 'no exact word matched: found by the vector leg');
});

test('an exact rare name is found', async () => {
  const r = await search(d, 'Zylberstein', { 'context.user': 'alice', k: 2 });
  assert.equal(r[0].id, corpus.rare);
  assert.ok(r[0].score_parts.text > 0);
});

test('a context filter excludes other users', async () => {
  const all = await search(d, 'Kubernetes cluster upgrade Friday night', { 'context.test': 'retrieval' });
  assert.ok(all.some((x) => x.id === corpus.bob) && all.some((x) => x.id === corpus.k8s));
  const bob = await search(d, 'Kubernetes cluster upgrade Friday night', { 'context.user': 'bob' });
  assert.deepEqual(bob.map((x) => x.id), [corpus.bob]);
  const nobody = await search(d, 'Kubernetes', { 'context.user': 'carol' });
  assert.deepEqual(nobody, []);
});

test('retrieval updates access stats', async () => {
  const before = (await search(d, 'Acme deal negotiation', { 'context.user': 'alice', k: 1 }))[0];
  assert.equal(before.id, corpus.deal);
  const again = (await search(d, 'Acme deal negotiation', { 'context.user': 'alice', k: 1 }))[0];
  assert.equal(again.access_count, before.access_count + 1);
  assert.ok(again.score_parts.frequency > before.score_parts.frequency);
});

test('recency: of two equally relevant memories the newer ranks first', async () => {
  const ctx = { test: 'recency', run: uniq() };
  const older = await store(d, 'Quarterly revenue review with the finance team', ctx);
  await sleep(1500);
  const newer = await store(d, 'Quarterly revenue review with the finance team', ctx);
  const r = await search(d, 'quarterly revenue review', { 'context.run': ctx.run });
  assert.deepEqual(r.map((x) => x.id), [newer, older]);
  assert.ok(r[0].score_parts.recency > r[1].score_parts.recency + 0.2);
});

test('feedback moves importance within 0..1 and changes the order', async () => {
  const ctx = { test: 'feedback', run: uniq() };
  const a = await store(d, 'Prefers the weekly pipeline digest by email', ctx);
  const b = await store(d, 'Prefers the weekly pipeline digest by email', ctx);
  let last = 0.5;
  for (let i = 0; i < 3; i++) {
    const res = await fetchJson(`${d.url}/api/memory/${a}/feedback`, { body: { useful: true } });
    assert.equal(res.status, 200, res.text);
    assert.ok(res.body.importance > last && res.body.importance <= 1);
    last = res.body.importance;
  }
  const down = await fetchJson(`${d.url}/api/memory/${b}/feedback`, { body: { useful: false } });
  assert.ok(down.body.importance < 0.5 && down.body.importance >= 0);
  const r = await search(d, 'weekly pipeline digest', { 'context.run': ctx.run });
  assert.deepEqual(r.map((x) => x.id), [a, b]);
  assert.ok(r[0].score_parts.importance > r[1].score_parts.importance);
});

test('bad input gets a clear 400', async () => {
  const post = (body) => fetchJson(`${d.url}/api/memory`, { body });
  const cases = [
    [{ content: '' }, /empty/],
    [{ content: '   ' }, /empty/],
    [{ memory_type: 'fact' }, /content is required/],
    [{ content: 'x'.repeat(3000) }, /limit is 2048/],
    [{ content: 'ok', context: 'alice' }, /context must be a JSON object/],
    [{ content: 'ok', context: { user: { nested: 1 } } }, /context values/],
    [{ content: 'ok', importance: 2 }, /importance/],
    [{ content: 'ok', memory_type: 7 }, /memory_type/],
  ];
  for (const [body, re] of cases) {
    const res = await post(body);
    assert.equal(res.status, 400, JSON.stringify(body));
    assert.match(res.body.error.message, re);
  }
  const notJson = await post('{"content":');
  assert.equal(notJson.status, 400);
  for (const k of ['0', '101', 'abc', '5x']) {
    const res = await fetchJson(`${d.url}/api/memory/search?q=tea&k=${k}`);
    assert.equal(res.status, 400, `k=${k}`);
    assert.equal(res.body.error.code, 'bad_k');
  }
  assert.equal((await fetchJson(`${d.url}/api/memory/search`)).status, 400);
  assert.equal((await fetchJson(`${d.url}/api/memory/search?q=tea&context.=x`)).status, 400);
  const fb = await fetchJson(`${d.url}/api/memory/${corpus.tea}/feedback`, { body: { useful: 'yes' } });
  assert.equal(fb.status, 400);
  const missing = await fetchJson(`${d.url}/api/memory/999999999/feedback`, { body: { useful: true } });
  assert.equal(missing.status, 404);
  assert.equal((await fetchJson(`${d.url}/api/memory/search`, { body: {} })).status, 405);
  // still alive and answering
  assert.equal((await search(d, 'green tea', { 'context.user': 'alice', k: 1 }))[0].id, corpus.tea);
});

test('WebSocket memory.search answers like the HTTP endpoint', async () => {
  const ws = await wsConnect(d.wsUrl);
  try {
    sendJson(ws, { type: 'request', id: 'm1', method: 'memory.search', params: { q: 'green tea honey', k: 2, context: { user: 'alice' } } });
    const msg = await nextMessage(ws, (m) => m.id === 'm1');
    assert.equal(msg.type, 'response', JSON.stringify(msg));
    assert.equal(msg.data.results[0].id, corpus.tea);
    sendJson(ws, { type: 'request', id: 'm2', method: 'memory.search', params: { k: 2 } });
    const bad = await nextMessage(ws, (m) => m.id === 'm2');
    assert.equal(bad.type, 'error');
  } finally {
    ws.close();
  }
});

test('stats and metrics report the store', async () => {
  const m = await memStats(d);
  assert.equal(m.status, 'ready');
  assert.ok(m.count >= 5 && m.by_type.fact >= 5, JSON.stringify(m));
  assert.ok(m.searches > 5 && m.p99_us > 0 && m.p99_us >= m.p50_us);
  const metrics = (await fetchJson(`${d.url}/metrics`)).text;
  assert.match(metrics, /sophia_memory_count\{type="fact"\} \d+/);
  assert.match(metrics, /sophia_memory_search_seconds\{quantile="0.99"\}/);
});

test('a restart keeps memories: index file reloaded, or rebuilt when deleted', async () => {
  const yaml = memYaml(table, indexPath);
  await d.stop();
  d = await startDaemon({ yaml });
  await d.waitForStderr(/index loaded/);
  let r = await search(d, 'Zylberstein Logistics renewal', { 'context.user': 'alice', k: 1 });
  assert.equal(r[0].id, corpus.rare);
  r = await search(d, 'kubernets clustr upgrade', { 'context.user': 'alice', k: 1 });
  assert.equal(r[0].id, corpus.k8s, 'vector leg works after reload');
  await d.stop();
  await rm(indexPath);
  d = await startDaemon({ yaml });
  await d.waitForStderr(/index rebuilt/);
  r = await search(d, 'kubernets clustr upgrade', { 'context.user': 'alice', k: 1 });
  assert.equal(r[0].id, corpus.k8s, 'vector leg works after rebuild');
});

test('dedup merges a near-duplicate pair and leaves a distinct pair', async () => {
  const t = uniq();
  const dd = await startDaemon({
    // HNSW here (Flat elsewhere): merged-away ids become tombstones.
    yaml: memYaml(t, '@TMP_DIR@/memory.index', `  index: hnsw
  consolidate:
    dedup: {after_new: 4}
plugins:
  path: ["@PLUGIN_DIR@"]
  instances:
    dedup:
      plugin: dedup
      options: {threshold: 0.75}
`),
  });
  try {
    const ctx = { user: 'dana' };
    const short = await store(dd, 'Dana prefers email over phone calls', ctx, { memory_type: 'user_preference' });
    const rich = await store(dd, 'Dana prefers email over phone calls for all follow-ups', ctx, { memory_type: 'user_preference' });
    const x = await store(dd, 'The warehouse in Rotterdam ships on Tuesdays', ctx);
    const y = await store(dd, 'Quarterly board meeting moved to the Berlin office', ctx);
    const m = await waitFor(async () => { const s = await memStats(dd); return s.consolidations >= 1 && s; }, 'a dedup run');
    assert.equal(m.merged, 1, JSON.stringify(m));
    assert.equal(m.count, 3);
    const r = await search(dd, 'Dana prefers email over phone calls', { 'context.user': 'dana' });
    const ids = r.map((e) => e.id);
    assert.ok(ids.includes(rich) && !ids.includes(short), `the richer one survives: ${ids}`);
    const kept = r.find((e) => e.id === rich);
    assert.ok(kept.access_count >= 0);
    assert.ok(ids.includes(x) && ids.includes(y), 'the distinct pair is left alone');
    assert.equal((await memStats(dd)).index, 'hnsw');
  } finally {
    await dd.stop();
  }
});

test('decay expires by policy from PostgreSQL and the index together', async () => {
  const t = uniq();
  const ixPath = path.join(keepDir, 'decay.index');
  const yaml = memYaml(t, ixPath, `  consolidate:
    decay: {every: 1s}
plugins:
  path: ["@PLUGIN_DIR@"]
  instances:
    decay:
      plugin: decay
      options:
        retention: ["event:1s", "fact:1s:0.8"]
`);
  const dd = await startDaemon({ yaml });
  try {
    const ctx = { user: 'erin' };
    const ev = await store(dd, 'Erin joined the onboarding webinar', ctx, { memory_type: 'event' });
    const keep = await store(dd, 'Erin is the budget owner for analytics', ctx, { importance: 0.9 });
    const drop = await store(dd, 'Erin mentioned a dentist appointment', ctx, { importance: 0.2 });
    const ins = await store(dd, 'Erin responds faster on Slack than email', ctx, { memory_type: 'insight' });
    const m = await waitFor(async () => { const s = await memStats(dd); return s.expired >= 2 && s; }, 'two expiries');
    assert.equal(m.expired, 2, JSON.stringify(m));
    assert.equal(m.count, 2);
    const r = await search(dd, 'Erin', { 'context.user': 'erin', k: 10 });
    assert.deepEqual(r.map((e) => e.id).sort(), [keep, ins].sort());
    assert.ok(!r.some((e) => e.id === ev || e.id === drop));
    // The saved index agrees with the table: a restart loads it as is.
    await sleep(2500); // the index is saved a couple of seconds after changes
    await dd.stop();
    const d2 = await startDaemon({ yaml: memYaml(t, ixPath) });
    try {
      await d2.waitForStderr(/index loaded" rows=2 /);
    } finally {
      await d2.stop();
    }
  } finally {
    await dd.stop().catch(() => {});
  }
});
