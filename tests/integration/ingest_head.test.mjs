// A stream that cannot take one event refuses POST /ingest/<stream> at its
// head (http/api_ingest.c admit_ingest, ingest/accept.c
// sophia_accept_has_room): 503 + Retry-After before the body is read, the
// connection closed, the stream's refused_early counted, and a client that
// sent `Expect: 100-continue` never sends its body. A stream with room
// answers that client 100 Continue and takes the body.
//
// Each case holds its stream in the state under test for as long as the
// test needs it, so nothing races the check: a memory queue of one whose
// event waits in flight on a webhook receiver that holds its POST until the
// test answers it (an event in flight keeps its queue slot), and a durable
// stream whose Redis address has nothing listening.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { startDaemon, fetchJson, freePort, until, timeoutScale } from './lib/daemon.mjs';
import { parseResponses, request } from './lib/rawhttp.mjs';

// The webhook receiver: holds every POST until release() answers them.
const held = [];
const server = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => held.push(res));
});
const release = () => { for (const res of held.splice(0)) res.writeHead(200).end('ok'); };

before(async () => {
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
});

after(() => {
  release();
  server.close();
});

/**
 * POSTs `body` to /ingest/<stream> as an `Expect: 100-continue` client
 * does: the head alone, the body only once a 100 Continue came. Resolves
 * once the final answer came and, for an answer that closes the
 * connection, the server's end of the stream too, to {continued (a 100
 * came and the body was sent), status, headers, body, ended (the server
 * shut its side)}.
 */
function postExpectingContinue(port, stream, body) {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    let continued = false;
    let answer = null;
    let ended = false;
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`no whole answer to the head: ${JSON.stringify(buf.toString('latin1'))}`));
    }, 5000 * timeoutScale);
    const finish = () => {
      clearTimeout(timer);
      s.destroy();
      resolve({ continued, ...answer, ended });
    };
    s.on('connect', () => s.write(request('POST', `/ingest/${stream}`, {
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
      expect: '100-continue',
    })));
    s.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      if (!continued && buf.toString('latin1').startsWith('HTTP/1.1 100 Continue\r\n\r\n')) {
        continued = true;
        s.write(body);
      }
      if (answer) return;
      [answer = null] = parseResponses(buf).responses;
      if (answer && answer.headers.connection !== 'close') finish(); // kept alive
    });
    s.on('end', () => {
      ended = true;
      if (answer) finish();
    });
    s.on('error', (e) => { clearTimeout(timer); reject(e); });
  });
}

const streamStats = async (d, name) => (await fetchJson(`${d.url}/api/stats`)).body.streams[name];

// What a refusal at the head looks like on the wire: no 100, a 503 that
// says when to come back, and the connection closed by the server.
function assertRefusedAtHead(r, code, message) {
  assert.equal(r.continued, false, 'no 100 Continue: the body was never sent');
  assert.equal(r.status, 503);
  assert.equal(r.headers['retry-after'], '1');
  assert.equal(r.headers.connection, 'close');
  assert.equal(r.ended, true, 'the server closed the connection');
  const err = JSON.parse(r.body).error;
  assert.equal(err.code, code);
  assert.match(err.message, message);
}

test('a memory queue held full refuses at the head; with room again the head gets 100 Continue', async () => {
  const d = await startDaemon({ yaml: `
plugins:
  path: ["@TEST_PLUGIN_DIR@"]
  instances:
    echo:
      plugin: echo
      options: {topic: held}
    hook:
      plugin: webhook
      options: {url: "http://127.0.0.1:${server.address().port}/in", timeout: 60, flush_interval: 0.01}
streams:
  one: {processor: echo, durable: false, queue_size: 1, outputs: [hook]}
` });
  try {
    // Room: 100 Continue, then the body is taken. Its event holds the one
    // slot until the receiver answers the webhook's POST.
    const first = await postExpectingContinue(d.port, 'one', '{"n":1}');
    assert.equal(first.continued, true);
    assert.equal(first.status, 202);
    assert.equal(first.ended, false, 'an accepted request keeps the connection');
    await until(() => held.length === 1, 'the event\'s record held at the receiver');
    const before = await streamStats(d, 'one');
    assert.equal(before.received, 1);
    assert.equal(before.processed, 0);

    const refused = await postExpectingContinue(d.port, 'one', '{"n":2}');
    assertRefusedAtHead(refused, 'queue_full', /^stream 'one' queue is full; retry later$/);
    const after1 = await streamStats(d, 'one');
    assert.equal(after1.refused_early, before.refused_early + 1);
    assert.equal(after1.received, 1, 'nothing accepted');
    assert.equal(after1.rejected, before.rejected, 'no body read, so no events counted rejected');
    const metrics = await (await fetch(`${d.url}/metrics`)).text();
    assert.match(metrics, new RegExp(`^sophia_stream_requests_refused_early_total\\{stream="one"\\} ${after1.refused_early}$`, 'm'));

    // The receiver answers: the event commits, its slot is free again.
    release();
    await until(async () => {
      const s = await streamStats(d, 'one');
      return s.processed === 1 && s.queued === 0 && s.inflight === 0;
    }, 'the held event committed');
    const again = await postExpectingContinue(d.port, 'one', '{"n":3}');
    assert.equal(again.continued, true);
    assert.equal(again.status, 202);
    const last = await streamStats(d, 'one');
    assert.equal(last.received, 2);
    assert.equal(last.refused_early, after1.refused_early);
    await until(() => held.length === 1, 'the second event at the receiver');
    release();
    await until(async () => (await streamStats(d, 'one')).processed === 2, 'the second event committed');
  } finally {
    release();
    await d.stop();
  }
});

test('a durable stream whose Redis is down refuses at the head, its memory neighbour takes the body', async () => {
  const port = await freePort(); // nothing listens there
  const d = await startDaemon({
    yaml: `
plugins:
  path: ["@TEST_PLUGIN_DIR@"]
  instances:
    echo:
      plugin: echo
      options: {topic: down}
streams:
  dur: {processor: echo, durable: true}
  mem: {processor: echo, durable: false}
`,
    env: { SOPHIA_REDIS_URL: `redis://127.0.0.1:${port}/0` },
  });
  try {
    // Until its first connect failed, a durable stream parks appends
    // rather than refusing them; a whole POST is answered only after that
    // attempt ended, so from its 503 on the head check sees Redis down.
    const first = await fetchJson(`${d.url}/ingest/dur`, { method: 'POST', body: { n: 0 } });
    assert.equal(first.status, 503);
    assert.equal(first.body.error.code, 'durable_unavailable');
    const before = await streamStats(d, 'dur');

    const refused = await postExpectingContinue(d.port, 'dur', '{"n":1}');
    assertRefusedAtHead(refused, 'durable_unavailable', /^stream 'dur' is durable and its Redis Stream '.+' cannot be written now; nothing was accepted, retry later$/);
    const after1 = await streamStats(d, 'dur');
    assert.equal(after1.refused_early, before.refused_early + 1);
    assert.equal(after1.received, 0, 'nothing accepted');
    assert.equal(after1.rejected, before.rejected);
    assert.equal(after1.sources.redis.durable.up, false);

    const mem = await postExpectingContinue(d.port, 'mem', '{"n":1}');
    assert.equal(mem.continued, true);
    assert.equal(mem.status, 202);
    const m = await streamStats(d, 'mem');
    assert.equal(m.received, 1);
    assert.equal(m.refused_early, 0);
  } finally {
    await d.stop();
  }
});
