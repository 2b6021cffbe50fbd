// Consolidation at any size (issue #20 item 3): each consolidator instance
// walks the whole store with a cursor kept in PostgreSQL, dedup finds a
// duplicate through the vector index wherever its twin is stored (never
// across scopes), and decay expires by strength (importance lowered by
// idle time, raised by use) and writes the lowered importance back. A real sophiad on the shared PostgreSQL,
// each daemon on a table of its own; small batches so a few dozen
// memories span several runs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startDaemon, fetchJson, timeoutScale, until } from './lib/daemon.mjs';
import { pgQuery } from './lib/servers.mjs';

const uniq = () => `cons_${process.pid}_${Date.now().toString(36)}_${Math.floor(Math.random() * 1e6)}`;
const waitFor = (fn, what, ms = 20000 * timeoutScale) => until(fn, what, ms, 100);
const memStats = async (d) => (await fetchJson(`${d.url}/api/stats`)).body.memory;

function yaml(table, consolidate, instances) {
  return `
memory:
  table: ${table}
  index_path: "@TMP_DIR@/memory.index"
  consolidate:
${consolidate}
plugins:
  path: ["@PLUGIN_DIR@"]
  instances:
${instances}`;
}

async function store(d, body) {
  const res = await fetchJson(`${d.url}/api/memory`, { body: { memory_type: 'fact', ...body } });
  assert.equal(res.status, 201, res.text);
  return res.body.id;
}

const history = async (d, id) => (await fetchJson(`${d.url}/api/memory/${id}/history`)).body.history;
const getMemory = async (d, id) => fetchJson(`${d.url}/api/memory/${id}`);

const words = ['amber', 'basil', 'cedar', 'delta', 'ember', 'fjord', 'gable', 'heron', 'indigo', 'juniper',
  'kestrel', 'lagoon', 'marble', 'nectar', 'onyx', 'pepper', 'quartz', 'raven', 'saffron', 'tundra'];
// Distinct enough that no two are near-duplicates.
const distinct = (i) => `${words[i % 20]} ${words[(i * 7 + 3) % 20]} note ${i}: ${words[(i * 3 + 1) % 20]} and ${words[(i * 11 + 5) % 20]} number ${i * 37}`;

test('successive runs walk every memory with a cursor that wraps and survives a restart', async () => {
  const t = uniq();
  // batch 10 over 80 memories: the old consolidation read the oldest batch
  // every time, so the weak ones stored last were never looked at.
  // neighbors: 0: decay judges each memory alone (no vector search).
  const cfg = yaml(t, '    decay: {every: 200ms, batch: 10, neighbors: 0}', `    decay:
      plugin: decay
      options: {half_life: 30d, floor: 0.1}
`);
  let d = await startDaemon({ yaml: cfg });
  try {
    const strong = [];
    for (let i = 0; i < 72; i++) strong.push(await store(d, { content: distinct(i), importance: 0.9 }));
    const weak = [];
    for (let i = 72; i < 80; i++) weak.push(await store(d, { content: distinct(i), importance: 0 }));
    // The weak ones are past 7 batches of strong ones: only a cursor gets there.
    await waitFor(async () => (await memStats(d)).expired >= weak.length, 'the weak memories expired');
    for (const id of weak) assert.equal((await getMemory(d, id)).status, 404, `${id} expired`);
    for (const id of strong) assert.equal((await getMemory(d, id)).status, 200, `${id} kept`);
    const h = await history(d, weak[weak.length - 1]);
    assert.equal(h.at(-1).event, 'deleted', JSON.stringify(h));
    assert.deepEqual(h.at(-1).detail, { by: 'consolidator', instance: 'decay' });
    // A pass is complete once the cursor wrapped; it is saved in PostgreSQL.
    const saved = await waitFor(async () => {
      const [row] = await pgQuery(`SELECT after_id, passes, last_pass_s FROM ${t}_cons WHERE instance = 'decay'`);
      return row && Number(row[1]) >= 1 && row;
    }, 'a complete pass saved');
    assert.ok(Number(saved[2]) > 0, `last pass duration: ${saved}`);
    const s = (await memStats(d)).consolidators.decay;
    assert.ok(s.passes >= 1 && s.last_pass_s > 0 && s.batch === 10 && s.neighbors === 0, JSON.stringify(s));
    assert.ok(s.position >= 0 && s.position <= weak.at(-1), JSON.stringify(s));
    await d.stop();
    // Mid-pass after the restart: the cursor goes on from what was saved.
    await pgQuery(`UPDATE ${t}_cons SET after_id = ${strong[40]}, passes = 5 WHERE instance = 'decay'`);
    d = await startDaemon({ yaml: cfg });
    const after = await waitFor(async () => {
      const c = (await memStats(d)).consolidators.decay;
      return c.loaded && c.passes >= 5 && c;
    }, 'the saved cursor loaded');
    assert.ok(after.position === 0 || after.position > strong[40], `continued after ${strong[40]}: ${JSON.stringify(after)}`);
    await waitFor(async () => (await memStats(d)).consolidators.decay.passes >= 6, 'the next pass completes');
    assert.equal((await memStats(d)).count, strong.length);
  } finally {
    await d.stop();
  }
});

test('dedup merges a duplicate whose twin is in another batch, never across scopes', async () => {
  const t = uniq();
  const d = await startDaemon({
    yaml: yaml(t, '    dedup: {every: 200ms, batch: 4}', `    dedup:
      plugin: dedup
      options: {threshold: 0.75}
`),
  });
  try {
    const text = 'Gwen prefers the quarterly invoice sent to the finance mailbox';
    const first = await store(d, { content: text, user_id: 'gwen' });
    const fillers = [];
    for (let i = 0; i < 12; i++) fillers.push(await store(d, { content: distinct(i), user_id: 'gwen' }));
    // Three batches later: the richer twin, and the same words for another
    // user, and in another session of the same user.
    const twin = await store(d, { content: `${text} every month`, user_id: 'gwen' });
    const otherUser = await store(d, { content: text, user_id: 'hank' });
    const otherSession = await store(d, { content: text, user_id: 'gwen', session_id: 's2' });
    const m = await waitFor(async () => {
      const s = await memStats(d);
      return s.merged >= 1 && s.consolidators.dedup.passes >= 2 && s;
    }, 'a merge and two complete passes');
    assert.equal(m.merged, 1, JSON.stringify(m));
    assert.equal((await getMemory(d, first)).status, 404, 'the shorter twin is merged away');
    for (const id of [twin, otherUser, otherSession, ...fillers])
      assert.equal((await getMemory(d, id)).status, 200, `${id} kept`);
    const hf = await history(d, first);
    assert.deepEqual(hf.map((e) => e.event), ['created', 'merged'], JSON.stringify(hf));
    assert.deepEqual(hf[1].detail, { into: twin, by: 'dedup' });
    const ht = await history(d, twin);
    assert.deepEqual(ht[1].detail, { absorbed: first, by: 'dedup' });
  } finally {
    await d.stop();
  }
});

test('decay expires an old unused memory and keeps an old one that is used', async () => {
  const t = uniq();
  const d = await startDaemon({
    yaml: yaml(t, '    decay: {every: 200ms, batch: 5}', `    decay:
      plugin: decay
      options: {half_life: 7d, access_boost: 0.05, floor: 0.2}
`),
  });
  try {
    const unused = await store(d, { content: 'Ivan once asked about the parking rules at the old office', importance: 0.5 });
    const used = await store(d, { content: 'Ivan signs every purchase order above ten thousand euros', importance: 0.5 });
    // A real read touches `used` (access_count, last_access)...
    const res = await fetchJson(`${d.url}/api/memory/search?q=${encodeURIComponent('purchase order above ten thousand')}&k=1`);
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body.results[0].id, used);
    await waitFor(async () => (await getMemory(d, used)).body.access_count >= 1, 'the access recorded');
    // ...then both are made 60 days old; `unused` was last read then too.
    await pgQuery(`UPDATE ${t} SET created_at = now() - interval '60 days' WHERE id IN (${unused}, ${used});
      UPDATE ${t} SET last_access = now() - interval '60 days' WHERE id = ${unused}`);
    await waitFor(async () => (await getMemory(d, unused)).status === 404, 'the unused memory expired');
    const kept = await getMemory(d, used);
    assert.equal(kept.status, 200);
    assert.ok(kept.body.access_count >= 1);
    const h = await history(d, unused);
    assert.equal(h.at(-1).event, 'deleted');
    // It stays: later passes look at it again and keep it.
    const p = (await memStats(d)).consolidators.decay.passes;
    await waitFor(async () => (await memStats(d)).consolidators.decay.passes >= p + 2, 'two more passes');
    assert.equal((await getMemory(d, used)).status, 200);
    assert.equal((await memStats(d)).expired, 1);
  } finally {
    await d.stop();
  }
});

test('decay writes the lowered importance back, and later passes do not count the same idle time again', async () => {
  const t = uniq();
  const d = await startDaemon({
    yaml: yaml(t, '    decay: {every: 200ms, batch: 5, neighbors: 0}', `    decay:
      plugin: decay
      options: {half_life: 7d, floor: 0.1}
`),
  });
  try {
    const id = await store(d, { content: 'Greta keeps the spare keys to the server room', importance: 0.8 });
    const fresh = await store(d, { content: 'Omar prefers the standup at nine', importance: 0.8 });
    // One half-life unused: 0.8 -> 0.4, still above the floor, so it stays.
    await pgQuery(`UPDATE ${t} SET created_at = now() - interval '7 days', last_access = now() - interval '7 days' WHERE id = ${id}`);
    await waitFor(async () => (await getMemory(d, id)).body.importance < 0.5, 'the importance written back');
    const imp = (await getMemory(d, id)).body.importance;
    assert.ok(imp > 0.39 && imp < 0.41, `importance ${imp}, want 0.8 halved`);
    const h = await history(d, id);
    assert.equal(h.at(-1).event, 'decayed');
    assert.equal(h.at(-1).detail.by, 'decay');
    // Passes after it decay from its decayed_at, not from its last access
    // again (that would halve it on every pass and expire it).
    const p = (await memStats(d)).consolidators.decay.passes;
    await waitFor(async () => (await memStats(d)).consolidators.decay.passes >= p + 3, 'three more passes');
    const later = await getMemory(d, id);
    assert.equal(later.status, 200);
    assert.ok(later.body.importance > 0.39, `importance ${later.body.importance} after more passes`);
    // A memory in use keeps what it was given.
    const f = (await getMemory(d, fresh)).body.importance;
    assert.ok(Math.abs(f - 0.8) < 1e-6, `importance ${f}, want 0.8 (real)`);
  } finally {
    await d.stop();
  }
});
