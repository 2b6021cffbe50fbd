// Cache keys and TTLs at the API, against the real Redis and PostgreSQL:
// the path is %-decoded exactly once (by the HTTP layer), every accepted
// key reads back by the same URL and sits in L2 and L3 under exactly those
// bytes, bad keys and bad TTLs are refused with 400 naming what is wrong,
// and the same key check guards WS cache.get and POST /api/cache/invalidate.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startDaemon, fetchJson, wsConnect, sendJson, nextMessage } from './lib/daemon.mjs';
import { redisCommand, pgQuery } from './lib/servers.mjs';

const run = `${process.pid}${Math.random().toString(36).slice(2, 6)}`;
const MAX_KEY = 1024;
const MAX_TTL = 315360000;

// Default strategy (write-through): every tier has the value when PUT answers.
// Values stay plain (cache.compress.level 0): the tests read the stored bytes.
const yaml = 'cache: {compress: {level: 0}}\n';

const url = (d, pathKey) => `${d.url}/api/cache/${pathKey}`;
const putRaw = (d, pathKey, body) =>
  fetchJson(url(d, pathKey), { method: 'PUT', body: typeof body === 'string' ? body : JSON.stringify(body),
    headers: { 'content-type': 'application/json' } });

const hex = (s) => Buffer.from(s, 'utf8').toString('hex');
// The L3 row for exactly these bytes (hex, so no quoting can change them).
async function pgRow(key) {
  const rows = await pgQuery(
    `SELECT convert_from(value, 'UTF8'), COALESCE(extract(epoch FROM expires_at - now())::bigint, -1) ` +
      `FROM sophia_cache WHERE key = convert_from(decode('${hex(key)}', 'hex'), 'UTF8') ` +
      `AND (expires_at IS NULL OR expires_at > now())`,
  );
  return rows.length ? { value: rows[0][0], ttl: Number(rows[0][1]) } : null;
}
const redisRaw = (key) => redisCommand(['GET', `sophia:c:${key}`]);

// [what the URL path says, the one key it decodes to]
const accepted = [
  [`sp${run}%20ace`, `sp${run} ace`],
  [`plusenc${run}%2Bx`, `plusenc${run}+x`],
  [`plusraw${run}+x`, `plusraw${run}+x`],
  [`pct${run}%25x`, `pct${run}%x`],
  [`dir${run}/sub/leaf`, `dir${run}/sub/leaf`],
  [`caf${run}%C3%A9`, `caf${run}\u00e9`],
  [`emo${run}%F0%9F%98%80`, `emo${run}\u{1F600}`],
  // decoded once: %41 is A, %2541 is the three bytes %41
  [`a${run}a%41`, `a${run}aA`],
  [`a${run}a%2541`, `a${run}a%41`],
];
const longKey = `max${run}`.padEnd(MAX_KEY, 'k');
accepted.push([longKey, longKey]);

test('every accepted key reads back by its URL and is in L2 and L3 under exactly its bytes', async () => {
  const d = await startDaemon({ yaml });
  try {
    for (const [i, [pathKey, key]] of accepted.entries()) {
      const r = await putRaw(d, pathKey, { value: { i, key }, ttl: 600 });
      assert.equal(r.status, 200, `PUT ${pathKey}: ${r.text}`);
      assert.equal(r.body.key, key, `PUT ${pathKey} names the key it stored`);
    }
    for (const [i, [pathKey, key]] of accepted.entries()) {
      const g = await fetchJson(url(d, pathKey));
      assert.equal(g.status, 200, `GET ${pathKey}: ${g.text}`);
      assert.equal(g.body.key, key);
      assert.deepEqual(g.body.value, { i, key }, `GET ${pathKey} reads its own value`);
      assert.match(String(await redisRaw(key)), new RegExp(`"i":${i},`), `${JSON.stringify(key)} in Redis`);
      const row = await pgRow(key);
      assert.ok(row, `${JSON.stringify(key)} in L3`);
      assert.deepEqual(JSON.parse(row.value), { i, key });
    }
    // a%41 and a%2541 are two keys, not one written twice
    assert.equal(await redisRaw(`a${run}aa%41`), null);
    assert.notEqual(await redisRaw(`a${run}aA`), await redisRaw(`a${run}a%41`));
    // DELETE and invalidate by body name the same keys
    const del = await fetchJson(url(d, `a${run}a%2541`), { method: 'DELETE' });
    assert.equal(del.status, 200);
    assert.equal((await fetchJson(url(d, `a${run}a%2541`))).status, 404);
    assert.equal((await fetchJson(url(d, `a${run}a%41`))).status, 200, 'the other key is untouched');
    const inv = await fetchJson(`${d.url}/api/cache/invalidate`, { method: 'POST', body: { keys: [`emo${run}\u{1F600}`] } });
    assert.equal(inv.status, 200, inv.text);
    assert.equal((await fetchJson(url(d, `emo${run}%F0%9F%98%80`))).status, 404);
    assert.equal(await pgRow(`emo${run}\u{1F600}`), null);
  } finally {
    await d.stop();
  }
});

test('bad keys are refused with 400 bad_key naming the byte, and nothing is stored', async () => {
  const d = await startDaemon({ yaml });
  try {
    // A NUL cannot be part of any path: the HTTP layer refuses it itself.
    const cases = [
      [`victim${run}%0d%0aX`, /control byte \(0x0d\)/, `victim${run}`],
      [`nul${run}%00x`, /NUL byte in the request target/, `nul${run}`, 'bad_request'],
      [`bad${run}%ff`, /byte \d+ \(0xff\) is not valid UTF-8/, `bad${run}`],
      [`long${run}`.padEnd(MAX_KEY + 1, 'k'), /longer than 1024 bytes/, `long${run}`],
    ];
    for (const [pathKey, why, prefix, code = 'bad_key'] of cases) {
      for (const method of ['PUT', 'GET', 'DELETE']) {
        const r = method === 'PUT' ? await putRaw(d, pathKey, { value: 1 })
          : await fetchJson(url(d, pathKey), { method });
        assert.equal(r.status, 400, `${method} ${pathKey.slice(0, 40)}: ${r.text}`);
        assert.equal(r.body.error.code, code);
        assert.match(r.body.error.message, why);
      }
      const stored = await redisCommand(['KEYS', `sophia:c:${prefix}*`]);
      assert.deepEqual(stored, [], `nothing under ${prefix} in Redis`);
      const rows = await pgQuery(`SELECT count(*) FROM sophia_cache WHERE key LIKE '${prefix}%'`);
      assert.equal(rows[0][0], '0', `nothing under ${prefix} in L3`);
    }
    // The byte offset is the decoded key's: "victimRUN" then CR.
    const r = await putRaw(d, `victim${run}%0d%0aX`, { value: 1 });
    assert.match(r.body.error.message, new RegExp(`byte ${`victim${run}`.length} is a control byte`));

    // One check for every entry point: invalidate bodies and WS cache.get.
    const inv = await fetchJson(`${d.url}/api/cache/invalidate`, { method: 'POST', body: { keys: ['ok', 'a\r\nb'] } });
    assert.equal(inv.status, 400, inv.text);
    assert.equal(inv.body.error.code, 'bad_key');
    assert.match(inv.body.error.message, /keys\[1\]: byte 1 is a control byte \(0x0d\)/);
    const ws = await wsConnect(d.wsUrl);
    try {
      for (const [id, key, why] of [['w1', 'a\nb', /byte 1 is a control byte \(0x0a\)/], ['w2', '', /empty/],
        ['w3', 'k'.repeat(MAX_KEY + 1), /longer than 1024/]]) {
        sendJson(ws, { type: 'request', id, method: 'cache.get', params: { key } });
        const m = await nextMessage(ws, (x) => x.id === id);
        assert.equal(m.type, 'error', JSON.stringify(m));
        assert.equal(m.error.code, 'bad_key');
        assert.match(m.error.message, why);
      }
      sendJson(ws, { type: 'request', id: 'w4', method: 'cache.get', params: { key: `caf${run}\u00e9-none` } });
      assert.equal((await nextMessage(ws, (x) => x.id === 'w4')).error.code, 'not_found');
    } finally {
      ws.close();
    }
  } finally {
    await d.stop();
  }
});

test('a ttl is a positive number of seconds up to 10 years; anything else is 400 bad_ttl', async () => {
  const d = await startDaemon({ yaml });
  try {
    const bad = ['1e16', '-1', '0', '"NaN"', '"Infinity"', '"abc"', '9223372036854775807', `${MAX_TTL + 1}`, 'null', '[]'];
    for (const ttl of bad) {
      const key = `ttl${run}bad`;
      const r = await putRaw(d, key, `{"value":1,"ttl":${ttl}}`);
      assert.equal(r.status, 400, `ttl ${ttl}: ${r.text}`);
      assert.equal(r.body.error.code, 'bad_ttl', `ttl ${ttl}`);
      assert.match(r.body.error.message, new RegExp(`at most ${MAX_TTL}`));
      assert.equal((await fetchJson(url(d, key))).status, 404, `ttl ${ttl}: nothing stored`);
    }
    // An integer too big for JSON numbers here is a body error, still 400.
    const huge = await putRaw(d, `ttl${run}huge`, '{"value":1,"ttl":99999999999999999999999}');
    assert.equal(huge.status, 400, huge.text);
    assert.equal((await fetchJson(url(d, `ttl${run}huge`))).status, 404);

    // The maximum is accepted and lives: L1 serves it, L2 and L3 keep ~10 years.
    const key = `ttl${run}max`;
    const ok = await putRaw(d, key, { value: 'ten years', ttl: MAX_TTL });
    assert.equal(ok.status, 200, ok.text);
    const g = await fetchJson(url(d, key));
    assert.equal(g.status, 200);
    assert.equal(g.body.value, 'ten years');
    const row = await pgRow(key);
    assert.ok(row && Math.abs(row.ttl - MAX_TTL) < 60, JSON.stringify(row));
    const pttl = Number(await redisCommand(['PTTL', `sophia:c:${key}`]));
    assert.ok(pttl > (MAX_TTL - 60) * 1000, `Redis PTTL ${pttl}`);
  } finally {
    await d.stop();
  }
});
