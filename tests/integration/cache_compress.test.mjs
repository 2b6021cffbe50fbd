// cache.compress end to end (issue 22), against the real Redis and
// PostgreSQL: entries written plain behind the daemon's back (as a node
// before compression left them) read back through the HTTP API beside new
// ones, which are stored compressed in both tiers above the threshold and
// plain at or below it; and a node with compression off reads what a node
// with it on wrote.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startDaemon, fetchJson } from './lib/daemon.mjs';
import { redisCommand, pgQuery } from './lib/servers.mjs';

const run = `${process.pid}${Math.random().toString(36).slice(2, 6)}`;
const THRESHOLD = 2048;
const on = `cache: {compress: {threshold: ${THRESHOLD}}}\n`;
const off = 'cache: {compress: {level: 0}}\n';

const url = (d, key) => `${d.url}/api/cache/${encodeURIComponent(key)}`;
const put = (d, key, value) =>
  fetchJson(url(d, key), { method: 'PUT', body: JSON.stringify({ value, ttl: 600 }) });
const get = (d, key) => fetchJson(url(d, key));

// A document of deal records whose JSON text is about `size` bytes.
function doc(seed, size) {
  const deals = [];
  for (let i = 0; JSON.stringify({ seed, deals }).length < size; i++)
    deals.push({ id: `${seed}-${i}`, stage: i % 3 ? 'appointmentscheduled' : 'closedwon', amount: (i * 7919) % 100000 });
  return { seed, deals };
}
// {"p":"aaa…"} of exactly n bytes of JSON text.
const padded = (n) => ({ p: 'a'.repeat(n - 8) });

// What Redis holds after the envelope's header line, and the L3 row's
// first byte and length.
async function redisStored(key) {
  const env = await redisCommand(['GET', `sophia:c:${key}`]);
  return env === null ? null : env.slice(env.indexOf('\n') + 1);
}
async function pgStored(key) {
  const rows = await pgQuery(`SELECT get_byte(value, 0), octet_length(value) FROM sophia_cache WHERE key = '${key}'`);
  return rows.length ? { first: Number(rows[0][0]), len: Number(rows[0][1]) } : null;
}

test('old plain entries and new compressed ones read side by side; the threshold holds', async () => {
  const d = await startDaemon({ yaml: on });
  try {
    // Written as before compression: plain JSON in an L2 envelope, and a
    // plain bytea row in L3.
    const old2 = doc(2, 6000), old3 = doc(3, 6000);
    await redisCommand(['SET', `sophia:c:old2:${run}`, `0 \n${JSON.stringify(old2)}`]);
    await pgQuery(
      `INSERT INTO sophia_cache (key, value, tags, version) VALUES ('old3:${run}', ` +
        `convert_to('${JSON.stringify(old3)}', 'UTF8'), '{}', 1)`,
    );
    let g = await get(d, `old2:${run}`);
    assert.equal(g.status, 200, g.text);
    assert.equal(g.body.tier, 'l2');
    assert.deepEqual(g.body.value, old2);
    g = await get(d, `old3:${run}`);
    assert.equal(g.body.tier, 'l3');
    assert.deepEqual(g.body.value, old3);

    // New: 10 KB compressed in both tiers; exactly the threshold plain;
    // one byte over compressed.
    const big = doc(10, 10240);
    for (const [key, value] of [[`big:${run}`, big], [`edge:${run}`, padded(THRESHOLD)], [`over:${run}`, padded(THRESHOLD + 1)]])
      assert.equal((await put(d, key, value)).status, 200);
    const bigText = JSON.stringify(big);
    const r = await redisStored(`big:${run}`);
    assert.equal(r.slice(0, 2), '\u0000\u0001', 'big is a zstd frame in Redis');
    assert.ok(r.length < bigText.length / 2, `big stored in ${r.length} of ${bigText.length} bytes in Redis`);
    const p = await pgStored(`big:${run}`);
    assert.equal(p.first, 0, 'big is a zstd frame in PostgreSQL');
    assert.ok(p.len < bigText.length / 2);
    assert.equal(await redisStored(`edge:${run}`), JSON.stringify(padded(THRESHOLD)));
    assert.deepEqual(await pgStored(`edge:${run}`), { first: '{'.charCodeAt(0), len: THRESHOLD });
    assert.equal((await redisStored(`over:${run}`)).slice(0, 2), '\u0000\u0001');
    assert.equal((await pgStored(`over:${run}`)).first, 0);

    // The figures: big and over packed once per tier, edge not at all;
    // the old L3 entry's promotion into L2 packed it too.
    const c = (await fetchJson(`${d.url}/api/stats`)).body.cache.compress;
    assert.equal(c.threshold, THRESHOLD);
    assert.equal(c.level, 1);
    assert.equal(c.packed, 5);
    assert.ok(c.packed_bytes_out < c.packed_bytes_in / 2, JSON.stringify(c));
    const metrics = (await fetchJson(`${d.url}/metrics`)).text;
    assert.equal(Number(metrics.match(/^sophia_cache_compressed_total (\d+)$/m)?.[1]), 5);
    assert.equal(Number(metrics.match(/^sophia_cache_decompress_failed_total (\d+)$/m)?.[1]), 0);
  } finally {
    await d.stop();
  }
  // A fresh daemon (empty L1) reads the new entries from L2, then, once
  // Redis lost one, from L3.
  const d2 = await startDaemon({ yaml: on });
  try {
    const g = await get(d2, `big:${run}`);
    assert.equal(g.body.tier, 'l2');
    assert.deepEqual(g.body.value, doc(10, 10240));
    await redisCommand(['DEL', `sophia:c:over:${run}`]);
    const o = await get(d2, `over:${run}`);
    assert.equal(o.body.tier, 'l3');
    assert.deepEqual(o.body.value, padded(THRESHOLD + 1));
  } finally {
    await d2.stop();
  }
});

test('a node with compression off reads compressed entries and writes plain ones', async () => {
  const a = await startDaemon({ yaml: on });
  const value = doc(20, 8000);
  try {
    assert.equal((await put(a, `mixed:${run}`, value)).status, 200);
    assert.equal((await redisStored(`mixed:${run}`)).slice(0, 2), '\u0000\u0001');
  } finally {
    await a.stop();
  }
  await redisCommand(['ZREM', 'sophia:hot', `mixed:${run}`]); // b must not warm it into L1
  const b = await startDaemon({ yaml: off });
  try {
    const g = await get(b, `mixed:${run}`);
    assert.equal(g.body.tier, 'l2');
    assert.deepEqual(g.body.value, value);
    const c = (await fetchJson(`${b.url}/api/stats`)).body.cache.compress;
    assert.deepEqual([c.level, c.packed, c.unpacked], [0, 0, 1]);
    assert.equal((await put(b, `plain:${run}`, value)).status, 200);
    assert.equal(await redisStored(`plain:${run}`), JSON.stringify(value));
    assert.equal((await pgStored(`plain:${run}`)).first, '{'.charCodeAt(0));
  } finally {
    await b.stop();
  }
});
