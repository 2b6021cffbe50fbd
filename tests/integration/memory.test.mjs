// sophia-test: cost 26
// Contextual memory end to end (SPEC §8): a real sophiad on the shared
// PostgreSQL, storing, searching (faiss + full-text, fused), feedback,
// restarts with and without the index file, the dedup and decay
// consolidator plugins, and bad input.
//
// Isolation: each daemon gets a table of its own (memory.table) and an
// index file in its own temp directory, so no test sees another's rows.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import {
  startDaemon, fetchJson, timeoutScale, wsConnect, sendJson, nextMessage, until,
} from './lib/daemon.mjs';
import { jwt } from './lib/jwt.mjs';
import { pgQuery, redisCommand } from './lib/servers.mjs';

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

// Twelve facts that differ in one word (the HNSW tests' rows).
const TOPICS = ['invoices', 'pipelines', 'dashboards', 'renewals', 'onboarding', 'security',
  'latency', 'forecasts', 'billing', 'migrations', 'hiring', 'roadmaps'];

const waitFor = (fn, what, ms = 10000 * timeoutScale) => until(fn, what, ms, 100);

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

test('a misspelled query still finds it (character n-grams, pg_trgm)', async () => {
  const r = await search(d, 'kubernetis clustr upgarde', { 'context.user': 'alice', k: 3 });
  assert.equal(r[0].id, corpus.k8s);
  // Each leg alone finds it too: the vector leg through character
  // n-grams, the text leg through the nearest known words (pg_trgm).
  const v = await search(d, 'kubernetis clustr upgarde', { 'context.user': 'alice', k: 3, legs: 'vector' });
  assert.equal(v[0].id, corpus.k8s);
  assert.equal(v[0].score_parts.text, 0, 'the vector leg alone has no text score');
  const t = await search(d, 'kubernetis clustr upgarde', { 'context.user': 'alice', k: 3, legs: 'text' });
  assert.equal(t[0].id, corpus.k8s);
  assert.ok(t[0].score_parts.text > 0, 'misspelled words were corrected to stored ones');
});

test('synonyms from share/memory_synonyms.txt widen the text leg', async () => {
  // "opportunity" is not in the memory; the list says it means "deal".
  const t = await search(d, 'Acme opportunity', { 'context.user': 'alice', k: 3, legs: 'text' });
  assert.equal(t[0].id, corpus.deal);
  // alone, the word finds what its group names: the deal, the contract
  const plain = await search(d, 'opportunity', { 'context.user': 'alice', k: 3, legs: 'text' });
  assert.deepEqual(plain.map((x) => x.id).sort(), [corpus.deal, corpus.rare].sort(), 'found through the synonyms alone');
});

test('legs must be all, vector or text', async () => {
  const res = await fetchJson(`${d.url}/api/memory/search?q=x&legs=both`);
  assert.equal(res.status, 400, res.text);
  assert.equal(res.body.error.code, 'bad_legs');
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
    // Both keep the merge in their history.
    const hist = async (id) => (await fetchJson(`${dd.url}/api/memory/${id}/history`)).body.history;
    const hs = await hist(short);
    assert.deepEqual(hs.map((e) => e.event), ['created', 'merged'], JSON.stringify(hs));
    assert.equal(hs[1].detail.into, rich);
    const hr = await hist(rich);
    assert.deepEqual(hr.map((e) => e.event), ['created', 'merged'], JSON.stringify(hr));
    assert.equal(hr[1].detail.absorbed, short);
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

test('removals past rebuild_removed_pct rebuild the HNSW index in the background', async () => {
  const t = uniq();
  const ixPath = path.join(keepDir, 'rebuild.index');
  const tail = `  index: hnsw
  rebuild_removed_pct: 30
  consolidate:
    decay: {every: 1s}
plugins:
  path: ["@PLUGIN_DIR@"]
  instances:
    decay:
      plugin: decay
      options:
        retention: ["event:1s"]
`;
  const dd = await startDaemon({ yaml: memYaml(t, ixPath, tail) });
  try {
    const ctx = { user: 'fay' };
    const facts = [];
    for (const w of TOPICS) facts.push(await store(dd, `Fay owns the quarterly ${w} review with the platform team`, ctx));
    const events = [];
    for (let i = 0; i < 6; i++) events.push(await store(dd, `Fay attended standup number ${i}`, ctx, { memory_type: 'event' }));
    const base = await memStats(dd);
    assert.equal(base.index, 'hnsw');
    // Search all along: the old index answers until the new one is swapped in.
    let searching = true;
    let answered = 0;
    const loop = (async () => {
      while (searching) {
        const r = await search(dd, 'quarterly pipelines review', { 'context.user': 'fay', k: 3 });
        assert.ok(r.length > 0);
        answered++;
      }
    })();
    const m = await waitFor(async () => {
      const s = await memStats(dd);
      return s.expired >= 6 && s.rebuilds > base.rebuilds && !s.rebuilding && s;
    }, 'the expiries and a background rebuild');
    searching = false;
    await loop;
    assert.ok(answered > 0);
    await dd.waitForStderr(/index rebuilt in the background" rows=12 left_out=6 kind=hnsw/);
    assert.equal(m.tombstones, 0, JSON.stringify(m));
    assert.equal(m.count, 12);
    assert.equal(m.index, 'hnsw');
    // The vector leg (alone: the text leg would correct the typos) works
    // on the new graph: the closest vector is the right one (half_life 3s: recency may
    // reorder the final list).
    const r = await search(dd, 'quartrly renewls reviw', { 'context.user': 'fay', k: 12, legs: 'vector' });
    const best = r.reduce((a, b) => (b.score_parts.vector > a.score_parts.vector ? b : a));
    assert.equal(best.id, facts[3]);
    assert.equal(best.score_parts.text, 0);
    const ev = await search(dd, 'Fay attended standup', { 'context.user': 'fay', k: 20 });
    assert.ok(!ev.some((e) => events.includes(e.id)), 'expired events are gone');
    // The saved index has no tombstones: a restart loads it as is.
    await sleep(2500);
    await dd.stop();
    const d2 = await startDaemon({ yaml: memYaml(t, ixPath, '  index: hnsw\n') });
    try {
      await d2.waitForStderr(/index loaded" rows=12 kind=hnsw/);
    } finally {
      await d2.stop();
    }
  } finally {
    await dd.stop().catch(() => {});
  }
});

test('a restart reuses the HNSW file: removed ids are tombstones again, rows it lacks are added', async () => {
  const t = uniq();
  const ixPath = path.join(keepDir, 'tombs.index');
  // rebuild_removed_pct 50: the restarts below keep their tombstones
  // (2 removed and 2 superseded of 14 entries), until the last one.
  const yaml = memYaml(t, ixPath, '  index: hnsw\n  rebuild_removed_pct: 50\n');
  const dd = await startDaemon({ yaml });
  let d2;
  try {
    const ctx = { user: 'gus' };
    const ids = [];
    for (const w of TOPICS) ids.push(await store(dd, `Gus owns the quarterly ${w} review with the platform team`, ctx));
    // 2 of 12 removed and one re-embedded (its old vector superseded): the
    // file keeps 13 entries for 10 rows.
    for (const id of ids.slice(0, 2)) {
      const r = await fetchJson(`${dd.url}/api/memory/${id}`, { method: 'DELETE' });
      assert.equal(r.status, 200, r.text);
    }
    const p = await fetchJson(`${dd.url}/api/memory/${ids[5]}`, {
      method: 'PATCH', body: { content: 'Gus moved the Rotterdam warehouse audit to Thursday' },
    });
    assert.equal(p.status, 200, p.text);
    assert.equal((await memStats(dd)).tombstones, 2);
    await sleep(2500); // the index is saved a couple of seconds after changes
    await dd.stop();
    const saved = await readFile(ixPath);

    d2 = await startDaemon({ yaml });
    // Rows updated within a minute of the file's save are added again
    // (the margin for clocks): ids[5] here.
    await d2.waitForStderr(/index loaded" rows=10 kind=hnsw tombstones=2 added=1 /);
    const m = await memStats(d2);
    assert.equal(m.rebuilds, 0, JSON.stringify(m));
    assert.equal(m.tombstones, 2);
    const all = await search(d2, 'quarterly review platform team', { 'context.user': 'gus', k: 20, legs: 'vector' });
    const found = all.map((e) => e.id);
    assert.ok(!found.includes(ids[0]) && !found.includes(ids[1]), `removed ids stay out: ${found}`);
    assert.equal(new Set(found).size, found.length, 'a superseded entry is not a second hit');
    // The closest vector (half_life 3s: recency may reorder the final list).
    const closest = async (q) => (await search(d2, q, { 'context.user': 'gus', k: 20, legs: 'vector' }))
      .reduce((a, b) => (b.score_parts.vector > a.score_parts.vector ? b : a)).id;
    assert.equal(await closest('Rotterdam warehouse audit Thursday'), ids[5], 'the patched memory has its new vector');

    // A crash loses the changes since the last save: a row stored and
    // another updated after it (the old file put back, as a crash leaves
    // it). The start adds both vectors from PostgreSQL instead of
    // building the graph again.
    const lisbon = await store(d2, 'Gus booked the offsite in Lisbon for October', ctx);
    const q = await fetchJson(`${d2.url}/api/memory/${ids[7]}`, {
      method: 'PATCH', body: { content: 'Gus signed the Helsinki datacenter lease renewal' },
    });
    assert.equal(q.status, 200, q.text);
    await d2.stop();
    await writeFile(ixPath, saved);
    d2 = await startDaemon({ yaml });
    await d2.waitForStderr(/index loaded" rows=11 kind=hnsw tombstones=2 added=3 /);
    assert.equal((await memStats(d2)).rebuilds, 0);
    assert.equal(await closest('offsite Lisbon October'), lisbon, 'the row stored after the save has its vector');
    assert.equal(await closest('Helsinki datacenter lease'), ids[7], 'the row updated after the save has its new vector');

    // Tombstones past rebuild_removed_pct at start: the file serves while
    // the graph is rebuilt in the background without them.
    await d2.stop();
    d2 = await startDaemon({ yaml: memYaml(t, ixPath, '  index: hnsw\n  rebuild_removed_pct: 10\n') });
    await d2.waitForStderr(/index loaded" rows=11 kind=hnsw tombstones=2 /);
    await d2.waitForStderr(/index rebuilt in the background" rows=11 /);
    assert.equal((await memStats(d2)).tombstones, 0);
  } finally {
    await d2?.stop().catch(() => {});
    await dd.stop().catch(() => {});
  }
});

test('with index auto a Flat index that reaches hnsw_threshold becomes HNSW while running', async () => {
  const t = uniq();
  const dd = await startDaemon({ yaml: memYaml(t, '@TMP_DIR@/memory.index', '  hnsw_threshold: 6\n') });
  try {
    const ctx = { user: 'gil' };
    const ids = [];
    for (let i = 0; i < 5; i++) ids.push(await store(dd, `Gil reviewed contract draft ${i} for the Oslo office`, ctx));
    assert.equal((await memStats(dd)).index, 'flat');
    ids.push(await store(dd, 'Gil prefers async updates over meetings', ctx));
    const m = await waitFor(async () => { const s = await memStats(dd); return s.index === 'hnsw' && s; }, 'the upgrade');
    assert.equal(m.count, 6);
    const r = await search(dd, 'Gil prefrs asynch updates', { 'context.user': 'gil', k: 1 });
    assert.equal(r[0].id, ids[5]);
  } finally {
    await dd.stop();
  }
});

test('what a dashboard reads often is remembered and warmed into L1 at the next start and when it reconnects', async () => {
  const t = uniq();
  const secret = 'memory-test-secret-0123456789abcdef';
  const yaml = memYaml(t, path.join(keepDir, 'access.index'),
    'websocket:\n  auth:\n    secret_env: SOPHIA_TEST_WS_SECRET\n');
  const env = { SOPHIA_TEST_WS_SECRET: secret };
  const run = uniq();
  const hot = [`ap:${run}:revenue`, `ap:${run}:pipeline`];
  const cold = `ap:${run}:other`; // read as often, by nobody in particular
  const cacheUrl = (dd, k, q = '') => `${dd.url}/api/cache/${encodeURIComponent(k)}${q}`;
  const d1 = await startDaemon({ yaml, env });
  try {
    for (const k of [...hot, cold]) {
      const res = await fetchJson(cacheUrl(d1, k), { method: 'PUT', body: JSON.stringify({ value: { k } }) });
      assert.equal(res.status, 200, res.text);
    }
    // The reader is the token's subject: `user` in params cannot say otherwise.
    const token = jwt({ sub: 'ann', exp: Math.floor(Date.now() / 1000) + 600, cache: ['ap:*'] }, secret);
    const ws = await wsConnect(`${d1.wsUrl}?token=${token}`);
    try {
      for (let i = 0; i < 3; i++) {
        for (const k of hot) {
          sendJson(ws, { type: 'request', id: `${k}${i}`, method: 'cache.get', params: { key: k, dashboard: 'ops', user: 'mallory' } });
          assert.equal((await nextMessage(ws, (m) => m.id === `${k}${i}`)).type, 'response');
        }
        assert.equal((await fetchJson(cacheUrl(d1, cold))).status, 200);
      }
    } finally {
      ws.close();
    }
    // A GET naming a reader records nothing; the explicit POST does.
    assert.equal((await fetchJson(cacheUrl(d1, hot[0], '?dashboard=ops&user=ann'))).status, 200);
    const rec = await fetchJson(`${d1.url}/api/cache/access`, { body: { keys: [hot[0]], dashboard: 'ops', user: 'ann' } });
    assert.equal(rec.status, 200, rec.text);
    assert.equal(rec.body.recorded, 1);
    const m = await waitFor(async () => { const s = await memStats(d1); return s.access.remembered >= 2 && s; }, 'two access patterns');
    assert.equal(m.access.reads, 7);
    assert.equal(m.by_type.access_pattern, 2, JSON.stringify(m));
    // They are memories like any other: "what does ops read?"
    const r = await search(d1, 'dashboard ops reads cache key', { 'context.dashboard': 'ops' });
    assert.deepEqual(r.map((e) => e.context.key).sort(), [...hot].sort());
    assert.ok(r.every((e) => e.memory_type === 'access_pattern' && e.access_count >= 3), JSON.stringify(r));
    assert.ok(r.every((e) => e.context.user === 'ann'), JSON.stringify(r));
  } finally {
    await d1.stop();
  }
  // The cache warms its own hot keys at start too: take ours out of that
  // list, so only the access patterns can bring them back.
  await redisCommand(['ZREM', 'sophia:hot', ...hot, cold]);
  const d2 = await startDaemon({ yaml, env });
  try {
    const m = await waitFor(async () => { const s = await memStats(d2); return s.access.warm_runs >= 1 && s; }, 'the start warm-up');
    assert.equal(m.access.warmed, 2, JSON.stringify(m.access));
    assert.match((await fetchJson(`${d2.url}/metrics`)).text, /^sophia_memory_access_warmed_total 2$/m);
    const cacheStats = async () => (await fetchJson(`${d2.url}/api/stats`)).body.cache;
    const before = await cacheStats();
    for (const k of hot) {
      const res = await fetchJson(cacheUrl(d2, k));
      assert.equal(res.body.tier, 'l1', `${k} was in L1 before anyone asked`);
    }
    const after = await cacheStats();
    assert.equal(after.l1.hits, before.l1.hits + 2);
    assert.equal(after.l2.hits, before.l2.hits, 'L2 not touched');
    assert.equal(after.l3.hits, before.l3.hits, 'L3 not touched');
    const res = await fetchJson(cacheUrl(d2, cold));
    assert.notEqual(res.body.tier, 'l1', 'a key nobody named was not warmed');
  } finally {
    await d2.stop();
  }
  // A dashboard's first read in a run warms its own keys: d3's L1 is too
  // small to keep the start warm-up past a few keys read twice (S3-FIFO
  // lets keys read once pass through without evicting anything).
  const d3 = await startDaemon({ yaml: `${yaml}cache:\n  l1: {max_entries: 4}\n`, env });
  try {
    const s0 = await waitFor(async () => { const s = await memStats(d3); return s.access.warm_runs >= 1 && s; }, 'the start warm-up');
    const fill = async () => {
      for (let i = 0; i < 16; i++) {
        const k = cacheUrl(d3, `ap:${run}:fill${i}`);
        assert.equal((await fetchJson(k, { method: 'PUT', body: JSON.stringify({ value: i }) })).status, 200);
        for (let j = 0; j < 2; j++) assert.equal((await fetchJson(k)).status, 200);
      }
    };
    await fill();
    assert.notEqual((await fetchJson(cacheUrl(d3, hot[1]))).body.tier, 'l1', 'the fillers evicted it');
    await fill();
    const rec = await fetchJson(`${d3.url}/api/cache/access`, { body: { keys: [cold], dashboard: 'ops' } });
    assert.equal(rec.status, 200, rec.text);
    await waitFor(async () => (await memStats(d3)).access.warmed >= s0.access.warmed + 2, 'the warm-up for ops');
    for (const k of hot) {
      assert.equal((await fetchJson(cacheUrl(d3, k))).body.tier, 'l1', `${k} warmed when ops came back`);
    }
  } finally {
    await d3.stop();
  }
});

test('no GET has a side effect: reads naming a dashboard and user record nothing, POST /api/cache/access does', async () => {
  const t = uniq();
  const dd = await startDaemon({ yaml: memYaml(t, '@TMP_DIR@/memory.index') });
  const key = `ap:${t}:k`;
  const cacheUrl = `${dd.url}/api/cache/${encodeURIComponent(key)}`;
  try {
    assert.equal((await fetchJson(cacheUrl, { method: 'PUT', body: { value: 1 } })).status, 200);
    await waitFor(async () => (await memStats(dd)).access !== undefined, 'the memory store');
    const before = await memStats(dd);
    // What a web page could make a browser do, and an unauthenticated WS read.
    for (let i = 0; i < 3; i++) {
      assert.equal((await fetchJson(`${cacheUrl}?dashboard=ops&user=ann`)).status, 200);
    }
    const ws = await wsConnect(dd.wsUrl);
    try {
      sendJson(ws, { type: 'request', id: 'r1', method: 'cache.get', params: { key, dashboard: 'ops', user: 'ann' } });
      assert.equal((await nextMessage(ws, (m) => m.id === 'r1')).type, 'response');
    } finally {
      ws.close();
    }
    await sleep(2500); // past one access flush (MEM_ACC_FLUSH_S = 2)
    const after = await memStats(dd);
    assert.equal(after.access.reads, before.access.reads, JSON.stringify(after.access));
    assert.equal(after.count, before.count);
    const rows = await pgQuery(`SELECT count(*) FROM ${t}`);
    assert.equal(rows[0][0], String(before.count));
    // The explicit way is counted (so the check above could have failed).
    const bad = await fetchJson(`${dd.url}/api/cache/access`, { body: { keys: [key] } });
    assert.equal(bad.status, 400, 'a reader must be named');
    const badKey = await fetchJson(`${dd.url}/api/cache/access`, { body: { keys: ['a\rb'], user: 'ann' } });
    assert.equal(badKey.status, 400);
    assert.equal(badKey.body.error.code, 'bad_key');
    const rec = await fetchJson(`${dd.url}/api/cache/access`, { body: { keys: [key, key], dashboard: 'ops', user: 'ann' } });
    assert.equal(rec.status, 200, rec.text);
    await waitFor(async () => (await memStats(dd)).access.remembered >= 1, 'the pattern remembered');
    assert.equal((await memStats(dd)).access.reads, before.access.reads + 2);
  } finally {
    await dd.stop();
  }
});

test('the gong processor remembers action items and risks per account and call', async () => {
  const t = uniq();
  const dd = await startDaemon({
    yaml: memYaml(t, '@TMP_DIR@/memory.index', `plugins:
  path: ["@PLUGIN_DIR@"]
  instances:
    gong: {plugin: gong}
streams:
  gong: {processor: gong}
`),
  });
  try {
    const body = await readFile(new URL('../data/gong_calls.ndjson', import.meta.url), 'utf8');
    // The transcript alone: analysed, but nothing remembered until the
    // metadata (account, speaker names) is known too.
    const [meta, transcript] = body.trim().split('\n');
    const ingest = (b) => fetchJson(`${dd.url}/ingest/gong`, { method: 'POST', body: b });
    assert.equal((await ingest(transcript)).status, 202);
    await waitFor(async () => (await fetchJson(`${dd.url}/api/cache/gong:call:7782342274025937895`)).status === 200,
      'the transcript analysed');
    assert.equal((await memStats(dd)).stores, 0);
    assert.equal((await ingest(meta)).status, 202);
    // The call's memories are stored one by one: wait until the count is
    // at least 3 and holds still, so a late one is not taken for a replay's.
    let last = -1;
    const m = await waitFor(async () => {
      const s = await memStats(dd);
      const settled = s.stores >= 3 && s.stores === last;
      last = s.stores;
      if (!settled) await sleep(300);
      return settled && s;
    }, 'the call memories');
    assert.equal(m.by_type.action_item >= 1 && m.by_type.risk >= 2, true, JSON.stringify(m.by_type));
    // Replaying the call stores nothing twice.
    assert.equal((await ingest(body)).status, 202);
    await sleep(500);
    assert.equal((await memStats(dd)).stores, m.stores);
    const acme = { 'context.account': 'acme', 'context.call': '7782342274025937895' };
    const risks = await search(dd, 'competitor budget', { ...acme, 'context.source': 'gong' });
    assert.equal(risks[0].memory_type, 'risk');
    assert.match(risks[0].content, /budget is tight and a competitor/);
    assert.equal(risks[0].context.speaker, 'Bob Buyer');
    const todo = await search(dd, 'send the updated proposal', acme);
    assert.equal(todo[0].memory_type, 'action_item');
    assert.match(todo[0].content, /I will send the updated proposal/);
    assert.equal(todo[0].context.speaker, 'Jane Seller');
    assert.deepEqual(await search(dd, 'competitor budget', { 'context.account': 'globex' }), []);
  } finally {
    await dd.stop();
  }
});

test('words in a large share of the table are left out of the full-text leg', async () => {
  const t = uniq();
  const yaml = memYaml(t, '@TMP_DIR@/memory.index');
  let dd = await startDaemon({ yaml }); // creates the table
  await waitFor(async () => (await memStats(dd)).status === 'ready', 'the table');
  await dd.stop();
  // 1,200 rows that all say "quarterly", one of them also "Zanzibar".
  await pgQuery(`INSERT INTO ${t} (content, memory_type, embedding)
    SELECT CASE WHEN g = 600 THEN 'quarterly Zanzibar offsite' ELSE 'quarterly note ' || g END,
           'fact', decode(repeat('00', 1536), 'hex') FROM generate_series(1, 1200) g`);
  dd = await startDaemon({ yaml });
  try {
    await dd.waitForStderr(/index rebuilt" rows=1200/);
    // Refreshed when the store is ready: "quarterly" (stem quarter) and
    // "note" are in (nearly) every row, so they are common; the rest not.
    const common = await waitFor(async () => {
      const r = await pgQuery(`SELECT common FROM ${t}_stats WHERE k = 1`);
      return r.length > 0 && r[0][0].includes('quarter') && r[0][0];
    }, 'the common words');
    assert.deepEqual(common.slice(1, -1).split(',').sort(), ['note', 'quarter']);
    const r = await search(dd, 'quarterly Zanzibar', { k: 3 });
    assert.match(r[0].content, /Zanzibar/);
    assert.ok(r[0].score_parts.text > 0, 'the rare word still reaches the text leg');
    const only = await search(dd, 'quarterly', { k: 5 });
    assert.ok(only.every((e) => e.score_parts.text === 0), 'a common-word query has no text leg');
  } finally {
    await dd.stop();
  }
});

test('phrases keep their stop words, and a misspelt name is corrected as typed', async () => {
  const t = uniq();
  const dd = await startDaemon({ yaml: memYaml(t, '@TMP_DIR@/memory.index') });
  try {
    const asked = await store(dd, 'Nadia Novak at Vinond Insurance asked for a Jira sync', {});
    await store(dd, 'Call with Jonas Zeller of Vinond Insurance: they asked about uptime', {});
    const stemend = await store(dd, 'Lucia Rossi from Stemend Bank escalated broken SSO', {});
    await store(dd, 'Leila Jansen from Stenu Capital escalated broken SSO', {});
    // "request" names its synonym group, whose "asked for" is the phrase
    // ask <-> for: it matches "asked for", not "asked about" (which the
    // lexeme "ask" alone did, tying the two)
    const r = await search(dd, 'what did Vinond request', { k: 2, legs: 'text' });
    assert.equal(r[0].id, asked);
    assert.ok(r[1].score_parts.text < r[0].score_parts.text, JSON.stringify(r.map((x) => x.score_parts)));
    // "Stemned" stems to "stemn", one slip from "stenu" and two from
    // "stemend"; as typed it is one swap from "stemend"
    const typo = await search(dd, 'Stemned escalated', { k: 1, legs: 'text' });
    assert.equal(typo[0].id, stemend, typo[0].content);
  } finally {
    await dd.stop();
  }
});

test('a store made before sophia_english is migrated: stemming, accents folded, identifiers\' numbers, the typo vocabulary filled', async () => {
  const t = uniq();
  // The table as an earlier sophiad made it: tsv from the plain 'english'
  // configuration, no _words table.
  await pgQuery(`CREATE TABLE ${t} (id bigserial PRIMARY KEY, content text NOT NULL,
    memory_type text NOT NULL, context jsonb NOT NULL DEFAULT '{}', importance real NOT NULL DEFAULT 0.5,
    created_at timestamptz NOT NULL DEFAULT now(), last_access timestamptz NOT NULL DEFAULT now(),
    access_count bigint NOT NULL DEFAULT 0, feedback integer NOT NULL DEFAULT 0,
    consolidated_into bigint NULL, embedding bytea NOT NULL,
    tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', content)) STORED);
    CREATE INDEX ${t}_tsv ON ${t} USING gin (tsv);
    INSERT INTO ${t} (content, memory_type, embedding)
      VALUES ('Renewal call with Café Zürich about Renée''s discount', 'fact', decode(repeat('00', 1536), 'hex')),
             ('Incident INC-9584 postmortem', 'fact', decode(repeat('00', 1536), 'hex'))`);
  const dd = await startDaemon({ yaml: memYaml(t, '@TMP_DIR@/memory.index') });
  try {
    await waitFor(async () => (await memStats(dd)).status === 'ready', 'the store');
    const expr = await pgQuery(`SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d
      JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
      WHERE d.adrelid = '${t}'::regclass AND a.attname = 'tsv'`);
    assert.match(expr[0][0], /sophia_english/);
    const idx = await pgQuery(`SELECT count(*) FROM pg_indexes WHERE indexname = '${t}_tsv'`);
    assert.equal(idx[0][0], '1', 'the GIN index is back on the new column');
    // the typo vocabulary was filled from the old rows (common-word pass,
    // on its own connection: until then the text leg knows none of their
    // words, so the searches below wait for it)
    await waitFor(async () => (await pgQuery(`SELECT count(*) FROM ${t}_words WHERE word = 'zurich'`))[0][0] === '1',
      'zurich in the typo vocabulary');
    // accents folded (unaccent) and stemming, on the migrated row
    const r = await search(dd, 'cafe zurich renee renewals', { k: 1, legs: 'text' });
    assert.match(r[0].content, /Café Zürich/);
    const typo = await search(dd, 'Zuirch discount', { k: 1, legs: 'text' });
    assert.match(typo[0].content, /Zürich/);
    // an identifier's number alone: "INC-9584" is indexed as "inc 9584",
    // not "inc" and the negative number "-9584"
    const num = await search(dd, 'postmortem of 9584', { k: 2, legs: 'text' });
    assert.equal(num.length, 1, JSON.stringify(num));
    assert.match(num[0].content, /INC-9584/);
    assert.ok(num[0].score_parts.text > 1, 'both words matched (idf ln 2 each), not only postmortem');
  } finally {
    await dd.stop();
  }
});
