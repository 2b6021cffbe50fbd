// The memory API beyond store and search (SPEC §13, issue 20 item 2): the
// scope columns user_id / agent_id / session_id (set, returned, migrated
// into an older table, enforced by search), GET / PATCH / DELETE of one
// memory, its stored history, the list with filters and cursor pages,
// context filters beyond equality (in, ranges), and
// forgetting a scope
// (rows, index entries, in-process copies) checked by searching for it
// afterwards with each leg, listing it, and restarting.
//
// Isolation: each daemon gets a table of its own and its own index file.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startDaemon, fetchJson, timeoutScale, until, wsConnect, sendJson, nextMessage,
} from './lib/daemon.mjs';
import { jwt } from './lib/jwt.mjs';
import { pgQuery } from './lib/servers.mjs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

const uniq = () => `memapi_${process.pid}_${Date.now().toString(36)}_${Math.floor(Math.random() * 1e6)}`;
const waitFor = (fn, what, ms = 10000 * timeoutScale) => until(fn, what, ms, 100);

function memYaml(table, extra = '', indexPath = '@TMP_DIR@/memory.index') {
  return `
memory:
  table: ${table}
  index_path: '${indexPath}'
${extra}`;
}

async function store(d, body) {
  const res = await fetchJson(`${d.url}/api/memory`, { body: { memory_type: 'fact', ...body } });
  assert.equal(res.status, 201, res.text);
  return res.body.id;
}

function url(d, p, params = {}) {
  const u = new URL(`${d.url}${p}`);
  for (const [k, v] of Object.entries(params)) u.searchParams.set(k, String(v));
  return u.toString();
}

async function search(d, q, params = {}) {
  const res = await fetchJson(url(d, '/api/memory/search', { q, ...params }));
  assert.equal(res.status, 200, res.text);
  return res.body.results;
}

async function list(d, params = {}) {
  const res = await fetchJson(url(d, '/api/memory', params));
  assert.equal(res.status, 200, res.text);
  return res.body;
}

const memStats = async (d) => (await fetchJson(`${d.url}/api/stats`)).body.memory;

let d;
let table;

before(async () => {
  table = uniq();
  d = await startDaemon({ yaml: memYaml(table) });
});

after(async () => {
  if (d) await d.stop();
});

test('user_id, agent_id, session_id: set from the request or its context, returned, enforced by search', async () => {
  const a = await store(d, { content: 'Quentin prefers invoices in euros every month', user_id: 'quentin', agent_id: 'billing-bot', session_id: 's1' });
  const b = await store(d, { content: 'Rosa prefers invoices in euros every quarter', context: { user_id: 'rosa', team: 'ops' } });
  const one = await fetchJson(`${d.url}/api/memory/${a}`);
  assert.equal(one.status, 200, one.text);
  assert.equal(one.body.user_id, 'quentin');
  assert.equal(one.body.agent_id, 'billing-bot');
  assert.equal(one.body.session_id, 's1');
  const two = (await fetchJson(`${d.url}/api/memory/${b}`)).body;
  assert.equal(two.user_id, 'rosa', 'taken from the context');
  assert.equal(two.agent_id, null);
  // Both match the words; the filter keeps each user to their own.
  const both = await search(d, 'invoices in euros');
  assert.ok(both.some((r) => r.id === a) && both.some((r) => r.id === b), JSON.stringify(both));
  for (const legs of ['all', 'vector', 'text']) {
    const r = await search(d, 'invoices in euros', { user_id: 'rosa', legs });
    assert.deepEqual(r.map((x) => x.id), [b], `legs=${legs}`);
    assert.equal(r[0].user_id, 'rosa');
  }
  assert.deepEqual((await search(d, 'invoices', { agent_id: 'billing-bot' })).map((x) => x.id), [a]);
  assert.deepEqual(await search(d, 'invoices', { user_id: 'quentin', session_id: 's2' }), []);
  // Bad scope values are named.
  const bad = await fetchJson(`${d.url}/api/memory`, { body: { content: 'x', user_id: 7 } });
  assert.equal(bad.status, 400);
  assert.match(bad.body.error.message, /user_id must be a string/);
  const badq = await fetchJson(url(d, '/api/memory/search', { q: 'x', session_id: '' }));
  assert.equal(badq.status, 400);
  assert.equal(badq.body.error.code, 'bad_filter');
  assert.match(badq.body.error.message, /session_id/);
});

test('GET, PATCH and DELETE one memory; PATCH of the content re-embeds it', async () => {
  const id = await store(d, { content: 'The Halvorsen account renews its support plan in March', user_id: 'pat', importance: 0.4 });
  assert.equal((await fetchJson(`${d.url}/api/memory/999999999`)).status, 404);
  const nf = await fetchJson(`${d.url}/api/memory/999999999`, { method: 'PATCH', body: { importance: 0.9 } });
  assert.equal(nf.status, 404, nf.text);
  // Only importance and context: the rest stays.
  const p1 = await fetchJson(`${d.url}/api/memory/${id}`, { method: 'PATCH', body: { importance: 0.9, context: { stage: 'renewal' } } });
  assert.equal(p1.status, 200, p1.text);
  assert.equal(p1.body.content, 'The Halvorsen account renews its support plan in March');
  assert.ok(Math.abs(p1.body.importance - 0.9) < 1e-6);
  assert.deepEqual(p1.body.context, { stage: 'renewal' });
  assert.equal(p1.body.user_id, 'pat');
  // A new content: both legs find it by its new words, the text leg no
  // longer by the old ones.
  const p2 = await fetchJson(`${d.url}/api/memory/${id}`, { method: 'PATCH', body: { content: 'Brightwater Shipping moved its onboarding workshop to Thursday' } });
  assert.equal(p2.status, 200, p2.text);
  assert.equal(p2.body.content, 'Brightwater Shipping moved its onboarding workshop to Thursday');
  for (const legs of ['vector', 'text']) {
    const r = await search(d, 'Brightwater onboarding workshop', { user_id: 'pat', legs, k: 1 });
    assert.equal(r[0]?.id, id, `legs=${legs}: ${JSON.stringify(r)}`);
  }
  assert.deepEqual(await search(d, 'Halvorsen', { user_id: 'pat', legs: 'text' }), []);
  const vr = await search(d, 'Brightwater onboarding workshop', { user_id: 'pat', legs: 'vector', k: 1 });
  assert.ok(vr[0].score_parts.vector > 0.5, 'the row holds the new embedding');
  // Bad patches are named.
  for (const [body, re] of [
    [{}, /nothing to change/],
    [{ user: 'x' }, /field user cannot be patched/],
    [{ importance: 2 }, /importance must be a number from 0 to 1/],
    [{ content: '' }, /content must not be empty/],
    [{ context: { a: [1] } }, /context values/],
  ]) {
    const res = await fetchJson(`${d.url}/api/memory/${id}`, { method: 'PATCH', body });
    assert.equal(res.status, 400, `${JSON.stringify(body)}: ${res.text}`);
    assert.match(res.body.error.message, re);
  }
  assert.equal((await fetchJson(`${d.url}/api/memory/abc`)).status, 404);
  assert.equal((await fetchJson(`${d.url}/api/memory/${id}`, { method: 'PUT', body: {} })).status, 405);
  // DELETE: gone from reads and searches; a second DELETE is a 404.
  const del = await fetchJson(`${d.url}/api/memory/${id}`, { method: 'DELETE' });
  assert.equal(del.status, 200, del.text);
  assert.equal(del.body.deleted, 1);
  assert.equal((await fetchJson(`${d.url}/api/memory/${id}`)).status, 404);
  assert.equal((await fetchJson(`${d.url}/api/memory/${id}`, { method: 'DELETE' })).status, 404);
  for (const legs of ['vector', 'text']) {
    const r = await search(d, 'Brightwater onboarding workshop', { legs });
    assert.ok(!r.some((x) => x.id === id), `legs=${legs}`);
  }
});

test('history: created, updated, feedback and deleted, oldest first', async () => {
  const id = await store(d, { content: 'Ulla runs the Tampere pilot', importance: 0.5, user_id: 'ulla' });
  const p = await fetchJson(`${d.url}/api/memory/${id}`, { method: 'PATCH', body: { content: 'Ulla runs the Tampere and Oulu pilots' } });
  assert.equal(p.status, 200, p.text);
  const f = await fetchJson(`${d.url}/api/memory/${id}/feedback`, { body: { useful: true } });
  assert.equal(f.status, 200, f.text);
  assert.equal((await fetchJson(`${d.url}/api/memory/${id}`, { method: 'DELETE' })).status, 200);
  const h = await fetchJson(`${d.url}/api/memory/${id}/history`);
  assert.equal(h.status, 200, h.text);
  assert.equal(h.body.id, id);
  const ev = h.body.history;
  assert.deepEqual(ev.map((e) => e.event), ['created', 'updated', 'feedback', 'deleted']);
  assert.equal(ev[0].detail.content, 'Ulla runs the Tampere pilot');
  assert.equal(ev[1].detail.content, 'Ulla runs the Tampere and Oulu pilots');
  assert.equal(ev[1].detail.old_content, 'Ulla runs the Tampere pilot');
  assert.ok(!('importance' in ev[1].detail), 'only what changed');
  assert.equal(ev[2].detail.useful, true);
  assert.ok(Math.abs(ev[2].detail.importance - 0.6) < 1e-6);
  assert.equal(ev[3].detail.by, 'api');
  assert.ok(ev.every((e, i) => i === 0 || e.at >= ev[i - 1].at));
  const nf = await fetchJson(`${d.url}/api/memory/999999999/history`);
  assert.equal(nf.status, 404);
  assert.match(nf.body.error.message, /no history for memory 999999999/);
  assert.equal((await fetchJson(`${d.url}/api/memory/${id}/history`, { method: 'DELETE' })).status, 405);
});

test('list: filters and cursor pages, newest first, no row twice', async () => {
  const ids = [];
  for (let i = 0; i < 7; i++) {
    ids.push(await store(d, { content: `Lena's note number ${i} about the Oslo office`, user_id: 'lena', session_id: i % 2 ? 'odd' : 'even', memory_type: i < 2 ? 'event' : 'fact' }));
  }
  await store(d, { content: 'Someone else entirely', user_id: 'mo' });
  const seen = [];
  let cursor;
  let pages = 0;
  do {
    const page = await list(d, { user_id: 'lena', limit: 3, ...(cursor ? { cursor } : {}) });
    assert.ok(page.memories.length <= 3);
    seen.push(...page.memories.map((m) => m.id));
    assert.ok(page.memories.every((m) => m.user_id === 'lena'));
    cursor = page.next_cursor;
    pages++;
  } while (cursor && pages < 10);
  assert.equal(pages, 3);
  assert.deepEqual(seen, [...ids].reverse());
  assert.deepEqual((await list(d, { user_id: 'lena', session_id: 'odd' })).memories.map((m) => m.id),
    ids.filter((_, i) => i % 2).reverse());
  assert.deepEqual((await list(d, { user_id: 'lena', memory_type: 'event' })).memories.map((m) => m.id),
    ids.slice(0, 2).reverse());
  const last = await list(d, { user_id: 'lena', limit: 7 });
  assert.equal(last.memories.length, 7);
  assert.equal(last.next_cursor, null);
  for (const [params, code] of [
    [{ limit: 0 }, 'bad_limit'], [{ limit: 1001 }, 'bad_limit'], [{ cursor: 'zzz' }, 'bad_cursor'],
    [{ cursor: 'm1.-4' }, 'bad_cursor'], [{ user_id: '' }, 'bad_filter'], [{ 'context.': 'x' }, 'bad_filter'],
  ]) {
    const res = await fetchJson(url(d, '/api/memory', params));
    assert.equal(res.status, 400, `${JSON.stringify(params)}: ${res.text}`);
    assert.equal(res.body.error.code, code);
  }
});

test('context filters: in, and ranges on numbers and ISO dates, in list and search', async () => {
  const accounts = [
    ['Kestrel', 'gold', 40, '2026-03-01'], ['Lumen', 'silver', 12, '2026-07-15'],
    ['Marlow', 'bronze', 75, '2026-01-20'], ['Nimbus', 'gold', 8, '2027-02-02'],
  ];
  const ids = {};
  for (const [name, tier, seats, renewal] of accounts) {
    ids[name] = await store(d, { content: `${name} account renewal planning notes`, user_id: 'filters', context: { tier, seats, renewal } });
  }
  const names = (ms) => ms.map((m) => m.content.split(' ')[0]).sort();
  const q = async (params) => names((await list(d, { user_id: 'filters', ...params })).memories);
  assert.deepEqual(await q({ 'context.tier[in]': 'gold,silver' }), ['Kestrel', 'Lumen', 'Nimbus']);
  assert.deepEqual(await q({ 'context.seats[gte]': 12 }), ['Kestrel', 'Lumen', 'Marlow']);
  assert.deepEqual(await q({ 'context.seats[gt]': 12, 'context.seats[lt]': 75 }), ['Kestrel']);
  assert.deepEqual(await q({ 'context.renewal[gte]': '2026-02-01', 'context.renewal[lte]': '2026-12-31' }), ['Kestrel', 'Lumen']);
  assert.deepEqual(await q({ 'context.tier[in]': 'gold', 'context.renewal[lt]': '2027-01-01' }), ['Kestrel']);
  // A range on a key whose value is not a number leaves the row out.
  assert.deepEqual(await q({ 'context.tier[gte]': 5 }), []);
  const r = await search(d, 'account renewal planning', { user_id: 'filters', 'context.seats[lte]': 12, k: 10 });
  assert.deepEqual(names(r), ['Lumen', 'Nimbus']);
  for (const [params, re] of [
    [{ 'context.seats[foo]': 1 }, /unknown operator foo/],
    [{ 'context.seats[gte]': 'soon' }, /context filter seats: gte must be a number or an ISO 8601 date/],
    [{ 'context.seats': 1, 'context.seats[gte]': 2 }, /either one value or operators/],
    [{ 'context.seats[]': 1 }, /unknown operator/],
  ]) {
    for (const p of ['/api/memory', '/api/memory/search']) {
      const res = await fetchJson(url(d, p, { q: 'x', ...params }));
      assert.equal(res.status, 400, `${p} ${JSON.stringify(params)}: ${res.text}`);
      assert.equal(res.body.error.code, 'bad_filter');
      assert.match(res.body.error.message, re);
    }
  }
});

test('an older table gets the scope columns at start, filled from the context', async () => {
  const t = uniq();
  await pgQuery(`CREATE TABLE ${t} (id bigserial PRIMARY KEY, content text NOT NULL, memory_type text NOT NULL, context jsonb NOT NULL DEFAULT '{}', importance real NOT NULL DEFAULT 0.5, created_at timestamptz NOT NULL DEFAULT now(), last_access timestamptz NOT NULL DEFAULT now(), access_count bigint NOT NULL DEFAULT 0, feedback integer NOT NULL DEFAULT 0, consolidated_into bigint NULL, embedding bytea NOT NULL)`);
  await pgQuery(`INSERT INTO ${t} (content, memory_type, context, embedding) VALUES ('Old note for Vera about the Lyon depot', 'fact', '{"user_id":"vera","agent_id":"a7"}', '\\x00'), ('Old note for Walt about the Lyon depot', 'fact', '{"user_id":"walt"}', '\\x00')`);
  const dd = await startDaemon({ yaml: memYaml(t) });
  try {
    await waitFor(async () => (await memStats(dd))?.status === 'ready', 'the memory store');
    const page = await list(dd, { user_id: 'vera' });
    assert.equal(page.memories.length, 1, JSON.stringify(page));
    assert.equal(page.memories[0].agent_id, 'a7');
    // The text leg knows an older table's words once the start-up word
    // pass (on its own connection) has filled <table>_words.
    await waitFor(async () => (await search(dd, 'Lyon depot', { legs: 'text' })).length === 2, 'the word pass');
    const r = await search(dd, 'Lyon depot', { user_id: 'walt', legs: 'text' });
    assert.deepEqual(r.map((x) => x.user_id), ['walt']);
    const h = await fetchJson(`${dd.url}/api/memory/${page.memories[0].id}/history`);
    assert.equal(h.status, 200, h.text);
    assert.deepEqual(h.body.history.map((e) => e.event), ['created'], 'backfilled for older rows');
    const idx = await pgQuery(`SELECT indexname FROM pg_indexes WHERE tablename = '${t}' ORDER BY 1`);
    const names = JSON.stringify(idx);
    for (const s of ['user', 'agent', 'session']) assert.ok(names.includes(`${t}_${s}`), names);
  } finally {
    await dd.stop();
    await pgQuery(`DROP TABLE IF EXISTS ${t}, ${t}_words, ${t}_stats`);
  }
});

test('forgetting a user (HNSW index): rows, index entries and copies gone; others untouched', async () => {
  const t = uniq();
  // Outside the daemon's temp dir: the restart below reads the same file.
  const keep = await mkdtemp(path.join(process.env.SOPHIA_TEST_TMP || os.tmpdir(), 'memapi-'));
  const ix = path.join(keep, 'memory.index');
  const dd = await startDaemon({ yaml: memYaml(t, '  index: hnsw\n', ix) });
  try {
    const xs = [];
    const topics = ['Nordlicht pricing tiers', 'Nordlicht renewal date', 'Nordlicht support escalation', 'Nordlicht data residency'];
    for (const w of topics) xs.push(await store(dd, { content: `Xavier asked about the ${w}`, user_id: 'xavier', session_id: `x-${w.length}` }));
    const ys = [];
    for (const w of topics) ys.push(await store(dd, { content: `Yara asked about the ${w}`, user_id: 'yara' }));
    // Access patterns read by xavier become his memories too.
    await fetchJson(`${dd.url}/api/cache/${encodeURIComponent(`k:${t}`)}`, { method: 'PUT', body: { value: 1 } });
    for (let i = 0; i < 2; i++) {
      const rec = await fetchJson(`${dd.url}/api/cache/access`, { body: { keys: [`k:${t}`], user: 'xavier' } });
      assert.equal(rec.status, 200, rec.text);
    }
    await waitFor(async () => (await list(dd, { user_id: 'xavier', memory_type: 'access_pattern' })).memories.length === 1, 'the access pattern memory');
    assert.equal((await memStats(dd)).index, 'hnsw');
    // A patched content on HNSW: the new vector is added under the same id,
    // the old entry superseded, and the rebuild below leaves it out.
    const p = await fetchJson(`${dd.url}/api/memory/${ys[0]}`, { method: 'PATCH', body: { content: 'Yara switched the Nordlicht contact to Ingrid Solberg' } });
    assert.equal(p.status, 200, p.text);
    const none = await fetchJson(`${dd.url}/api/memory`, { method: 'DELETE' });
    assert.equal(none.status, 400);
    assert.match(none.body.error.message, /user_id, agent_id, session_id/);
    const del = await fetchJson(url(dd, '/api/memory', { user_id: 'xavier' }), { method: 'DELETE' });
    assert.equal(del.status, 200, del.text);
    assert.equal(del.body.deleted, xs.length + 1);
    const gone = new Set(xs);
    for (const q of ['Xavier Nordlicht pricing tiers', 'Nordlicht renewal date', 'xavier reads cache key']) {
      for (const legs of ['all', 'vector', 'text']) {
        const r = await search(dd, q, { legs, k: 20 });
        assert.ok(!r.some((x) => gone.has(x.id) || x.user_id === 'xavier'), `${q} legs=${legs}: ${JSON.stringify(r)}`);
      }
    }
    assert.deepEqual((await list(dd, { user_id: 'xavier' })).memories, []);
    for (const id of xs) {
      assert.equal((await fetchJson(`${dd.url}/api/memory/${id}`)).status, 404);
      assert.equal((await fetchJson(`${dd.url}/api/memory/${id}/history`)).status, 404, 'the history holds contents: it goes too');
    }
    assert.equal((await pgQuery(`SELECT count(*) FROM ${t} WHERE user_id = 'xavier'`))[0][0], '0');
    // Yara's are all still there, and found.
    assert.deepEqual((await list(dd, { user_id: 'yara' })).memories.map((m) => m.id), [...ys].reverse());
    const yr = await search(dd, 'Nordlicht renewal date', { user_id: 'yara', k: 1 });
    assert.equal(yr[0].id, ys[1]);
    // The vectors leave the HNSW graph too: a rebuild runs and leaves no tombstones.
    const s = await waitFor(async () => { const m = await memStats(dd); return m.tombstones === 0 && m.rebuilds >= 1 && m; }, 'the purge rebuild');
    assert.equal(s.count, ys.length);
    // Yara's four vectors and nothing else: xavier's five and the patched
    // one's old entry are left out.
    await dd.waitForStderr(/index rebuilt in the background" rows=4 left_out=5 kind=hnsw/);
    const ir = await search(dd, 'Ingrid Solberg contact', { user_id: 'yara', legs: 'vector', k: 1 });
    assert.equal(ir[0]?.id, ys[0], JSON.stringify(ir));
    // Reading again as xavier does not bring the old pattern back by itself.
    const again = await fetchJson(`${dd.url}/api/cache/access`, { body: { keys: [`k:${t}`], user: 'xavier' } });
    assert.equal(again.status, 200);
    await new Promise((r) => setTimeout(r, 2500));
    assert.deepEqual((await list(dd, { user_id: 'xavier' })).memories, [], 'one read is below the threshold');
  } finally {
    await dd.stop();
  }
  // A restart serves the same: nothing of xavier.
  const d2 = await startDaemon({ yaml: memYaml(t, '  index: hnsw\n', ix) });
  try {
    await waitFor(async () => (await memStats(d2))?.status === 'ready', 'the memory store');
    await d2.waitForStderr(/index loaded" rows=4 /);
    const r = await search(d2, 'Xavier Nordlicht pricing tiers', { legs: 'vector', k: 20 });
    assert.ok(!r.some((x) => x.user_id === 'xavier'), JSON.stringify(r));
  } finally {
    await d2.stop();
    await rm(keep, { recursive: true, force: true });
  }
});

test('the /ws memory methods obey the token\'s memory scope', async () => {
  const t = uniq();
  const SECRET = 'memory-api-ws-secret-0123456789abcdef0123';
  const dd = await startDaemon({
    yaml: `${memYaml(t)}websocket:
  auth:
    secret_env: MEMAPI_WS_SECRET
`,
    env: { MEMAPI_WS_SECRET: SECRET },
  });
  let n = 0;
  const request = async (ws, method, params) => {
    const id = `r${++n}`;
    sendJson(ws, { type: 'request', id, method, params });
    return nextMessage(ws, (m) => m.id === id);
  };
  const open = (memory) => wsConnect(`${dd.wsUrl}?token=${jwt({ sub: 'x', exp: Math.floor(Date.now() / 1000) + 600, memory }, SECRET)}`);
  try {
    const other = await store(dd, { content: 'Olaf keeps the Bergen warehouse keys', user_id: 'olaf' });
    const ws = await open({ user_id: 'nina' });
    // store: the scope comes from the token; a top-level one is refused
    const s1 = await request(ws, 'memory.store', { content: 'Nina keeps the Bergen office keys', memory_type: 'fact' });
    assert.equal(s1.type, 'response', JSON.stringify(s1));
    const mine = s1.data.id;
    assert.equal((await fetchJson(`${dd.url}/api/memory/${mine}`)).body.user_id, 'nina');
    const s2 = await request(ws, 'memory.store', { content: 'x', user_id: 'olaf' });
    assert.equal(s2.error.code, 'bad_request');
    assert.match(s2.error.message, /params.context/);
    const s3 = await request(ws, 'memory.store', { content: 'x', context: { user_id: 'olaf' } });
    assert.equal(s3.error.code, 'forbidden');
    // search and list see only the scope
    const r = await request(ws, 'memory.search', { q: 'Bergen keys', k: 10 });
    assert.deepEqual(r.data.results.map((x) => x.id), [mine]);
    const l = await request(ws, 'memory.list', { limit: 10 });
    assert.deepEqual(l.data.memories.map((x) => x.id), [mine]);
    assert.equal(l.data.next_cursor, null);
    // by id: another user's memory is not found; one's own works
    for (const method of ['memory.get', 'memory.history', 'memory.delete']) {
      const e = await request(ws, method, { id: other });
      assert.equal(e.error?.code, 'not_found', `${method}: ${JSON.stringify(e)}`);
    }
    const u0 = await request(ws, 'memory.update', { id: other, set: { importance: 1 } });
    assert.equal(u0.error.code, 'not_found');
    assert.equal((await fetchJson(`${dd.url}/api/memory/${other}`)).status, 200, 'untouched');
    const g = await request(ws, 'memory.get', { id: mine });
    assert.equal(g.data.content, 'Nina keeps the Bergen office keys');
    // an update keeps the memory in the scope, whatever context it sets
    const u = await request(ws, 'memory.update', { id: mine, set: { content: 'Nina keeps the Bergen office and garage keys', context: { user_id: 'olaf', room: 'b2' } } });
    assert.equal(u.type, 'response', JSON.stringify(u));
    assert.deepEqual(u.data.context, { user_id: 'nina', room: 'b2' });
    assert.equal(u.data.user_id, 'nina');
    const bu = await request(ws, 'memory.update', { id: mine, set: { colour: 'red' } });
    assert.equal(bu.error.code, 'bad_request');
    const h = await request(ws, 'memory.history', { id: mine });
    assert.deepEqual(h.data.history.map((e) => e.event), ['created', 'updated']);
    // forget: only scope columns; the token's own user
    const f0 = await request(ws, 'memory.forget', { context: { user_id: 'olaf' } });
    assert.equal(f0.error.code, 'forbidden');
    const f = await request(ws, 'memory.forget', {});
    assert.equal(f.type, 'response', JSON.stringify(f));
    assert.equal(f.data.deleted, 1);
    assert.equal((await fetchJson(`${dd.url}/api/memory/${mine}`)).status, 404);
    assert.equal((await fetchJson(`${dd.url}/api/memory/${other}`)).status, 200);
    ws.close();
    // a scope on another key cannot forget (it could not see what it removes)
    const team = await open({ team: 'ops' });
    const ft = await request(team, 'memory.forget', { context: { user_id: 'olaf' } });
    assert.equal(ft.error.code, 'bad_request');
    assert.match(ft.error.message, /only user_id, agent_id and session_id/);
    team.close();
  } finally {
    await dd.stop();
  }
});
