// SPEC §12 HTTP safety against the real daemon, one raw connection per
// case: every legal request shape gets exactly one answer (bodies on GET,
// HEAD and DELETE, Content-Length: 0, chunked, pipelining with bodies and
// async handlers, half-close, a client that leaves mid-request); what an
// HTTP/1.1 server must refuse is refused from the head, at once, and the
// connection closed; web pages are refused (Host, Origin, content type);
// body bytes and connections are capped. The sanitizer job runs this file
// too, which is what shows "once": a second dispatch or answer of one
// request is a use-after-free there.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { fetchJson, startDaemon, timeoutScale, until } from './lib/daemon.mjs';
import { exchange, request } from './lib/rawhttp.mjs';

const STREAM = `
plugins:
  path: ["@TEST_PLUGIN_DIR@"]
  instances:
    e:
      plugin: echo
      options: {topic: t}
streams:
  s:
    processor: e
  mem:
    processor: e
    durable: false
`;

let d;
before(async () => {
  d = await startDaemon({
    yaml: `
server:
  max_body: 4k
  max_body_total: 10k
  hosts: [sophia.test]
${STREAM}`,
  });
});

after(async () => {
  if (d) assert.deepEqual(await d.stop(), { code: 0, signal: null, killed: false });
});

const JSON_CT = { 'content-type': 'application/json' };
const post = (path, body, headers = {}) =>
  request('POST', path, { ...JSON_CT, 'content-length': Buffer.byteLength(body), ...headers }, body);
const healthz = request('GET', '/healthz');
const statuses = (r) => r.responses.map((x) => x.status);

test('a body on GET, HEAD or DELETE is read and answered once, and the connection goes on', async () => {
  const del = await exchange(d.port, [
    request('DELETE', '/api/cache/shape-del', { 'content-length': 1 }, 'x') + healthz,
  ], { want: 2 });
  assert.deepEqual(statuses(del), [200, 200]);
  assert.equal(del.responses[1].body.includes('"status"'), true);
  const get = await exchange(d.port, [request('GET', '/healthz', { 'content-length': 5 }, 'hello') + healthz], { want: 2 });
  assert.deepEqual(statuses(get), [200, 200]);
  // HEAD: the GET answer's headers, no body; the next answer parses only
  // if no body byte was sent for the HEAD.
  const head = await exchange(d.port, [request('HEAD', '/healthz', { 'content-length': 2 }, 'hi') + healthz],
    { want: 2, heads: [true, false] });
  assert.deepEqual(statuses(head), [200, 200]);
  assert.ok(Number(head.responses[0].headers['content-length']) > 0, 'HEAD keeps the length');
  assert.match(head.responses[1].body, /"status"/);
});

test('Content-Length: 0 is a request without a body; POST or PUT without a length is 411 at once', async () => {
  const zero = await exchange(d.port, [post('/ingest/s', '') + healthz], { want: 2 });
  assert.deepEqual(statuses(zero), [400, 200]);
  assert.equal(JSON.parse(zero.responses[0].body).error.code, 'bad_json');
  for (const m of ['POST', 'PUT']) {
    const r = await exchange(d.port, [request(m, m === 'PUT' ? '/api/cache/k' : '/ingest/s', JSON_CT)]);
    assert.deepEqual(statuses(r), [411], m);
    assert.equal(r.closed, true, `${m}: closed after 411`);
  }
});

test('malformed or conflicting lengths are refused with 400 (501 for an unknown coding), never guessed', async () => {
  const smuggled = healthz; // would be a second request if the wrong length won
  const cases = [
    [{ 'content-length': '-1' }, 400],
    [{ 'content-length': '5, 5' }, 400],
    [{ 'content-length': 'abc' }, 400],
    [{ 'content-length': ['5', '5'] }, 400],
    [{ 'content-length': ['5', '40'] }, 400],
    [{ 'content-length': '5', 'transfer-encoding': 'chunked' }, 400],
    [{ 'transfer-encoding': 'gzip' }, 501],
    [{ 'transfer-encoding': ['chunked', 'chunked'] }, 400],
  ];
  for (const [headers, want] of cases) {
    const r = await exchange(d.port, [request('POST', '/ingest/s', { ...JSON_CT, ...headers }, `{"a":1}${smuggled}`)]);
    assert.deepEqual(statuses(r), [want], JSON.stringify(headers));
    assert.equal(r.closed, true, JSON.stringify(headers));
  }
  const folded = await exchange(d.port, ['GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: 1\r\n  folded\r\n\r\n']);
  assert.deepEqual(statuses(folded), [400]);
  const space = await exchange(d.port, ['GET /healthz HTTP/1.1\r\nHost : 127.0.0.1\r\n\r\n']);
  assert.deepEqual(statuses(space), [400]);
  const bareLf = await exchange(d.port, ['GET /healthz HTTP/1.1\nHost: 127.0.0.1\n\n']);
  assert.ok(bareLf.closed, 'bare LF heads are not served');
  assert.ok(bareLf.responses.length <= 1);
  const noHost = await exchange(d.port, ['GET /healthz HTTP/1.1\r\n\r\n']);
  assert.deepEqual(statuses(noHost), [400]);
  const v2 = await exchange(d.port, ['GET /healthz HTTP/2.0\r\nHost: 127.0.0.1\r\n\r\n']);
  assert.deepEqual(statuses(v2), [505]);
  const huge = await exchange(d.port, [`GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ${'a'.repeat(17000)}\r\n\r\n`]);
  assert.deepEqual(statuses(huge), [431]);
  const badEscape = await exchange(d.port, [request('GET', '/api/cache/a%zz')]);
  assert.deepEqual(statuses(badEscape), [400]);
  assert.equal((await fetchJson(`${d.url}/healthz`)).status, 200);
});

test('chunked bodies are read, in pieces, with extensions and trailers; over max_body is 413', async () => {
  const head = `POST /ingest/s HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/x-ndjson\r\ntransfer-encoding: chunked\r\n\r\n`;
  const body = ['8;ext=1\r\n{"n":1}\n\r\n', '8\r\n{"n":2}', '\n\r\n0\r\nx-trailer: 1\r\n\r\n'];
  const r = await exchange(d.port, [head, ...body], { gapMs: 30 });
  assert.deepEqual(statuses(r), [202]);
  assert.equal(JSON.parse(r.responses[0].body).accepted, 2);
  const big = 'a'.repeat(1000);
  const over = await exchange(d.port, [head, ...Array.from({ length: 5 }, () => `3e8\r\n${big}\r\n`), '0\r\n\r\n']);
  assert.deepEqual(statuses(over), [413]);
  assert.equal(over.closed, true);
  const bad = await exchange(d.port, [head, 'zz\r\n']);
  assert.deepEqual(statuses(bad), [400]);
});

test('a body over max_body is refused from its head, before a byte of it is sent', async () => {
  const t0 = Date.now();
  const r = await exchange(d.port, [request('POST', '/ingest/s', { ...JSON_CT, 'content-length': 41943040 })]);
  assert.deepEqual(statuses(r), [413]);
  assert.equal(r.closed, true);
  assert.ok(Date.now() - t0 < 3000 * timeoutScale, 'answered without waiting for the body');
  // Expect: 100-continue: no 100 for a refused body, a 100 for an accepted one.
  const ex = await exchange(d.port, [request('POST', '/ingest/s', { ...JSON_CT, 'content-length': 41943040, expect: '100-continue' })]);
  assert.deepEqual(statuses(ex), [413]);
  assert.equal(ex.interim, false);
  const ok = await exchange(d.port, [request('POST', '/ingest/s', { ...JSON_CT, 'content-length': 7, expect: '100-continue' }), '{"n":1}'], { gapMs: 100 });
  assert.equal(ok.interim, true);
  assert.deepEqual(statuses(ok), [202]);
});

test('pipelined requests with bodies get one answer each, in order, mixed with async handlers and HEAD', async () => {
  const two = await exchange(d.port, [post('/ingest/s', '{"n":1}') + post('/ingest/s', '{"n":2}')], { want: 2 });
  assert.deepEqual(statuses(two), [202, 202]);
  const N = 50;
  let puts = '';
  for (let i = 0; i < N; i++) {
    const b = JSON.stringify({ value: i });
    puts += request('PUT', `/api/cache/pipe-${i}`, { ...JSON_CT, 'content-length': Buffer.byteLength(b) }, b);
  }
  const many = await exchange(d.port, [puts], { want: N, timeoutMs: 20000 * timeoutScale });
  assert.deepEqual(statuses(many), Array(N).fill(200));
  const mixed = await exchange(d.port, [
    request('PUT', '/api/cache/pipe-mixed', { ...JSON_CT, 'content-length': 11 }, '{"value":7}') +
    request('GET', '/api/memory/search?q=anything') +
    request('HEAD', '/healthz') +
    post('/ingest/s', '{"n":3}') +
    request('GET', '/api/cache/pipe-mixed') +
    request('GET', '/api/cache/pipe-49'),
  ], { want: 6, heads: [false, false, true, false, false, false] });
  assert.deepEqual(statuses(mixed), [200, 200, 200, 202, 200, 200]);
  assert.equal(JSON.parse(mixed.responses[4].body).value, 7);
  assert.equal(JSON.parse(mixed.responses[5].body).value, 49);
});

// An ingest answer is held until the loop has done the body's work
// (http_req.c, "answers after the work"), but a loop that stays busy
// sends it within 2 ms: here the answer to a body of 9,000 events comes
// while most of them are still queued, not once the queue is empty.
test('a held ingest answer does not wait for a long backlog', async () => {
  const big = await startDaemon({ yaml: `
server:
  max_body: 4m
${STREAM}` });
  try {
    const N = 9000;
    const body = JSON.stringify(Array.from({ length: N }, (_, i) => ({ i })));
    const r = await exchange(big.port, [post('/ingest/mem', body)], { settleMs: 0, timeoutMs: 20000 * timeoutScale });
    assert.deepEqual(statuses(r), [202]);
    const at = (await fetchJson(`${big.url}/api/stats`)).body.streams.mem;
    assert.equal(at.received, N);
    assert.ok(at.processed < N, `answered with ${at.processed} of ${N} processed`);
    await until(async () => (await fetchJson(`${big.url}/api/stats`)).body.streams.mem.processed === N, 'the backlog processed');
  } finally {
    await big.stop();
  }
});

test('a client that half-closes after its requests gets every answer', async () => {
  const one = await exchange(d.port, [post('/ingest/s', '{"n":4}')], { halfClose: true });
  assert.deepEqual(statuses(one), [202]);
  assert.equal(one.closed, true);
  const three = await exchange(d.port, [healthz + healthz + healthz], { halfClose: true, want: 3 });
  assert.deepEqual(statuses(three), [200, 200, 200]);
});

test('clients that leave mid-request or while an async handler runs leave the daemon serving', async () => {
  const leave = (bytes) => new Promise((resolve) => {
    const s = net.connect(d.port, '127.0.0.1', () => { s.write(bytes); s.destroy(); resolve(); });
    s.on('error', resolve);
  });
  for (let i = 0; i < 20; i++) {
    await leave(request('GET', `/api/memory/search?q=leave${i}`));
    await leave(request('PUT', `/api/cache/leave-${i}`, { ...JSON_CT, 'content-length': 11 }, '{"value":1}'));
    await leave(request('POST', '/ingest/s', { ...JSON_CT, 'content-length': 100 }, '{"n":'));
    await leave('GET /heal');
    // a whole body and a reset: the answer held for it is dropped
    await new Promise((resolve) => {
      const s = net.connect(d.port, '127.0.0.1', () => { s.write(post('/ingest/mem', '{"n":5}')); s.resetAndDestroy(); resolve(); });
      s.on('error', resolve);
    });
  }
  await until(async () => (await fetchJson(`${d.url}/api/stats`)).body.http.connections <= 1, 'abandoned connections closed');
  assert.equal((await fetchJson(`${d.url}/healthz`)).status, 200);
});

test('web pages are refused: Host (DNS rebinding), Origin on writes and /ws, content type', async () => {
  const evil = await exchange(d.port, [request('GET', '/api/stats', { host: 'evil.example' })]);
  assert.deepEqual(statuses(evil), [421]);
  assert.equal(JSON.parse(evil.responses[0].body).error.code, 'misdirected');
  for (const host of [`localhost:${d.port}`, `127.0.0.1:${d.port}`, `[::1]:${d.port}`, 'sophia.test', 'app.localhost']) {
    assert.deepEqual(statuses(await exchange(d.port, [request('GET', '/healthz', { host })])), [200], host);
  }
  const wsEvil = await exchange(d.port, [request('GET', '/ws', {
    host: 'evil.example', connection: 'Upgrade', upgrade: 'websocket',
    'sec-websocket-version': 13, 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==',
  })]);
  assert.deepEqual(statuses(wsEvil), [421]);
  const foreign = await exchange(d.port, [post('/ingest/s', '{"n":5}', { origin: 'http://evil.example' })]);
  assert.deepEqual(statuses(foreign), [403]);
  assert.equal(JSON.parse(foreign.responses[0].body).error.code, 'forbidden_origin');
  const del = await exchange(d.port, [request('DELETE', '/api/cache/k', { origin: 'http://evil.example' })]);
  assert.deepEqual(statuses(del), [403]);
  const own = await exchange(d.port, [post('/ingest/s', '{"n":6}', { host: `127.0.0.1:${d.port}`, origin: `http://127.0.0.1:${d.port}` })]);
  assert.deepEqual(statuses(own), [202]);
  const read = await exchange(d.port, [request('GET', '/healthz', { origin: 'http://evil.example' })]);
  assert.deepEqual(statuses(read), [200], 'a read has no effect to protect');
  for (const ct of ['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', null]) {
    const h = { 'content-length': 7 };
    if (ct) h['content-type'] = ct;
    const r = await exchange(d.port, [request('POST', '/ingest/s', h, '{"n":7}')]);
    assert.deepEqual(statuses(r), [415], String(ct));
  }
  for (const ct of ['application/json; charset=utf-8', 'application/x-ndjson', 'Application/JSON']) {
    const r = await exchange(d.port, [request('POST', '/ingest/s', { 'content-type': ct, 'content-length': 7 }, '{"n":8}')]);
    assert.deepEqual(statuses(r), [202], ct);
  }
  const http10 = await exchange(d.port, ['GET /healthz HTTP/1.0\r\n\r\n']);
  assert.deepEqual(statuses(http10), [200]);
  assert.equal(http10.closed, true, 'HTTP/1.0 closes after the answer');
});

test('body bytes in flight are capped by server.max_body_total, and counted', async () => {
  // Two heads reserve 2 × 4000 of the 10k; a third 4000 does not fit.
  const hold = [];
  for (let i = 0; i < 2; i++) {
    const s = net.connect(d.port, '127.0.0.1');
    await new Promise((r) => s.on('connect', r));
    s.write(request('POST', '/ingest/s', { ...JSON_CT, 'content-length': 4000 }));
    hold.push(s);
  }
  await until(async () => (await fetchJson(`${d.url}/api/stats`)).body.http.body_bytes === 8000, 'bodies reserved');
  const third = await exchange(d.port, [request('POST', '/ingest/s', { ...JSON_CT, 'content-length': 4000 })]);
  assert.deepEqual(statuses(third), [503]);
  assert.equal(third.responses[0].headers['retry-after'], '1');
  const metrics = await (await fetch(`${d.url}/metrics`)).text();
  assert.match(metrics, /^sophia_http_body_bytes 8000$/m);
  for (const s of hold) s.destroy();
  await until(async () => (await fetchJson(`${d.url}/api/stats`)).body.http.body_bytes === 0, 'released on close');
  const after = await exchange(d.port, [request('POST', '/ingest/s', { ...JSON_CT, 'content-length': 7 }, '{"n":9}')]);
  assert.deepEqual(statuses(after), [202]);
});

test('connections over server.max_connections get 503 at once and are counted', async () => {
  const c = await startDaemon({ env: { SOPHIA_REDIS_URL: '', SOPHIA_PG_URL: '' }, yaml: 'server:\n  max_connections: 3\n' });
  const idle = [];
  try {
    for (let i = 0; i < 3; i++) {
      const s = net.connect(c.port, '127.0.0.1');
      await new Promise((r) => s.on('connect', r));
      idle.push(s);
    }
    await until(async () => {
      const r = await exchange(c.port, [healthz]);
      return r.responses[0]?.status === 503;
    }, 'the fourth connection is refused');
    idle.pop().destroy();
    await until(async () => (await exchange(c.port, [healthz])).responses[0]?.status === 200, 'a freed slot serves');
    const m = await (await fetch(`${c.url}/metrics`)).text();
    assert.match(m, /^sophia_http_connections_refused_total [1-9]/m);
  } finally {
    for (const s of idle) s.destroy();
    assert.deepEqual(await c.stop(), { code: 0, signal: null, killed: false });
  }
});

test('with tokens, a missing or wrong token is 401 from the head, before the body', async () => {
  const t = await startDaemon({
    env: { SOPHIA_REDIS_URL: '', SOPHIA_PG_URL: '', SHAPES_TOKENS: 'tok' },
    yaml: `server:\n  tokens: {secret_env: SHAPES_TOKENS}\n${STREAM}`,
  });
  try {
    const t0 = Date.now();
    const r = await exchange(t.port, [request('POST', '/ingest/s', { ...JSON_CT, 'content-length': 1000 })]);
    assert.deepEqual(statuses(r), [401]);
    assert.equal(r.closed, true);
    assert.ok(Date.now() - t0 < 3000 * timeoutScale);
    const ok = await exchange(t.port, [post('/ingest/s', '{"n":1}', { authorization: 'Bearer tok' })]);
    assert.deepEqual(statuses(ok), [202]);
    const stats = (await fetchJson(`${t.url}/api/stats`, { token: 'tok' })).body.http;
    assert.ok(stats.refused >= 1);
  } finally {
    assert.deepEqual(await t.stop(), { code: 0, signal: null, killed: false });
  }
});

test('routes: /api/ paths are admitted before their 404, /ingest/ is POST only, deep JSON is refused except on /ingest', async () => {
  const t = await startDaemon({
    env: { SOPHIA_REDIS_URL: '', SOPHIA_PG_URL: '', SHAPES_TOKENS: 'tok' },
    yaml: `server:\n  tokens: {secret_env: SHAPES_TOKENS}\n${STREAM}`,
  });
  const auth = { authorization: 'Bearer tok' };
  const one = async (req) => (await exchange(t.port, [req])).responses[0];
  try {
    // every /api/ path, known or not, wants the token first
    for (const [m, p] of [['GET', '/api/nope'], ['POST', '/api/stats'], ['GET', '/api/memoryX'], ['GET', '/api/cache/k']])
      assert.equal((await one(request(m, p, { 'content-length': 0 }))).status, 401, `${m} ${p}`);
    const nope = await one(request('GET', '/api/nope', auth));
    assert.equal(nope.status, 404);
    assert.deepEqual(JSON.parse(nope.body).error, { code: 'not_found', message: 'no endpoint /api/nope' });
    assert.equal((await one(request('POST', '/api/stats', { ...auth, 'content-length': 0 }))).status, 404, 'GET only');
    // outside /api/ and /ingest/: no token needed, unknown paths are 404
    assert.equal((await one(request('GET', '/healthz'))).status, 200);
    assert.equal((await one(request('GET', '/no-such-file.js'))).status, 404);
    assert.equal((await one(request('DELETE', '/healthz'))).status, 404);
    assert.equal((await one(request('GET', '/ingest/s', auth))).status, 405);
    assert.equal((await one(request('GET', '/hooks/gong'))).status, 404, 'hooks are POST only');
    // 65 levels: 400 too_deep before the handler, but /ingest parses it
    const deep = '['.repeat(65) + ']'.repeat(65);
    const cacheDeep = await one(post('/api/cache/invalidate', deep, auth));
    assert.equal(cacheDeep.status, 400);
    assert.equal(JSON.parse(cacheDeep.body).error.code, 'too_deep');
    const ingestDeep = await one(post('/ingest/s', deep, auth));
    assert.equal(ingestDeep.status, 400);
    assert.equal(JSON.parse(ingestDeep.body).error.code, 'bad_json', '/ingest words its own errors');
    // the documents see the running daemon, not a zeroed context
    const stats = (await fetchJson(`${t.url}/api/stats`, { token: 'tok' })).body;
    assert.ok(stats.uptime_s >= 0 && stats.uptime_s < 3600, `uptime_s ${stats.uptime_s}`);
    assert.ok(stats.http.requests >= 10);
    assert.ok('s' in stats.streams);
    const metrics = await one(request('GET', '/metrics'));
    const up = Number(/^sophia_uptime_seconds (\d+)$/m.exec(metrics.body)[1]);
    assert.ok(up < 3600, `sophia_uptime_seconds ${up}`);
    assert.match(metrics.body, /^sophia_reloads_total 0$/m);
  } finally {
    assert.deepEqual(await t.stop(), { code: 0, signal: null, killed: false });
  }
});

test('server.hosts, server.origins and server.max_body follow SIGHUP', async () => {
  const yaml = (extra) => `server:\n  max_body: 4k\n${extra}\n${STREAM}`;
  const r = await startDaemon({ env: { SOPHIA_REDIS_URL: '', SOPHIA_PG_URL: '' }, yaml: yaml('') });
  try {
    const host = () => exchange(r.port, [request('GET', '/healthz', { host: 'later.test' })]);
    const write = () => exchange(r.port, [post('/ingest/s', '{"n":1}', { origin: 'https://dash.test' })]);
    const big = () => exchange(r.port, [request('POST', '/ingest/s', { ...JSON_CT, 'content-length': 6000 })]);
    assert.deepEqual(statuses(await host()), [421]);
    assert.deepEqual(statuses(await write()), [403]);
    assert.deepEqual(statuses(await big()), [413]);
    const before = (await fetchJson(`${r.url}/api/stats`)).body.reload.reloads;
    await r.writeConfig(yaml('  max_body: 8k\n  hosts: [later.test]\n  origins: ["https://dash.test"]').replace('  max_body: 4k\n', ''));
    r.signal('SIGHUP');
    await until(async () => (await fetchJson(`${r.url}/api/stats`)).body.reload.reloads > before, 'the reload');
    assert.deepEqual(statuses(await host()), [200]);
    assert.deepEqual(statuses(await write()), [202]);
    const fits = await exchange(r.port, [request('POST', '/ingest/s', { ...JSON_CT, 'content-length': 6000 }, `[${'1,'.repeat(2998)}11]`)]);
    assert.notEqual(fits.responses[0].status, 413, 'the new max_body applies');
  } finally {
    assert.deepEqual(await r.stop(), { code: 0, signal: null, killed: false });
  }
});
