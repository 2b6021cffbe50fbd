// Processor chains (streams.<name>.processors, core/ingest/chain.h): the
// `relay` test plugin passes each event on with host->emit, appending its
// mark to "hops" and the count of events it had committed ("seen_<mark>");
// the `failer` plugin at the end publishes what reaches it. So a
// subscriber sees which links each event went through, in which order,
// what filter links let pass, how a split fans out, and whether a link's
// staged state moved with the event's verdict: a RETRY at the last link
// must leave the first link's counter as it was. A reload that gives one
// link new options swaps that link while events flow, and none is lost.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  startDaemon, fetchJson, wsConnect, nextMessage, takeMessages, until,
} from './lib/daemon.mjs';

const run = `${process.pid}-${Date.now()}`;

const yaml = (bMark = 'b') => `
plugins:
  path: ["@TEST_PLUGIN_DIR@"]
  instances:
    a: {plugin: relay, options: {mark: a}}
    b: {plugin: relay, options: {mark: ${bMark}}}
    last: {plugin: failer, options: {topic: chain, cache_prefix: "chain:${run}:", undoable: true}}
streams:
  chain:
    processors:
      - a
      - filter: [{path: keep, not_equals: "no"}]
      - b
      - last
    durable: false
`;

let d;
let ws;
before(async () => {
  d = await startDaemon({ yaml: yaml() });
  ws = await wsConnect(d.wsUrl);
  ws.send(JSON.stringify({ type: 'subscribe', subscriptions: ['chain'] }));
  await nextMessage(ws, 'subscribed');
});
after(async () => {
  ws?.close();
  await d?.stop();
});

const stats = async () => (await fetchJson(`${d.url}/api/stats`)).body.streams.chain;
const post = async (events) => {
  const r = await fetchJson(`${d.url}/ingest/chain`, { method: 'POST', body: events });
  assert.equal(r.status, 202, r.text);
};
// The events published on `chain` so far (the last link's input).
const seen = [];
const drain = () => {
  for (const m of takeMessages(ws)) if (m.topic === 'chain' && m.data) seen.push(m.data);
  return seen;
};
const waitSeen = (pred, what) => until(() => drain().filter(pred).length > 0 && drain().filter(pred), what, 10000);

test('each link sees what the link before it emitted, in order; a filter link anywhere', async () => {
  const before = await stats();
  await post([{ n: 1, tag: 'plain' }, { n: 2, keep: 'no' }, { n: 3, drop_at: 'b' }]);
  const [one] = await waitSeen((e) => e.tag === 'plain', 'the plain event');
  assert.deepEqual(one.hops, ['a', 'b']);
  assert.equal(typeof one.seen_a, 'number');
  assert.equal(typeof one.seen_b, 'number');
  await until(async () => (await stats()).processed + (await stats()).filtered >= before.processed + before.filtered + 3,
    'all three settled', 10000);
  const st = await stats();
  // n 2: the filter link took it (after a, so a's work commits: processed);
  // n 3: b dropped it after a passed it on: a's effects still count.
  assert.equal(st.processed - before.processed, 3, JSON.stringify(st));
  assert.equal(drain().some((e) => e.n === 2 || e.n === 3), false);
});

test('a filter link that takes the event at the head counts it filtered', async () => {
  // A chain whose first link is a filter is checked in the reload test's
  // config below; here: the stream-level count for a chain-filtered drop.
  const d2 = await startDaemon({
    yaml: yaml().replace('      - a\n      - filter: [{path: keep, not_equals: "no"}]', '      - filter: [{path: keep, not_equals: "no"}]\n      - a'),
  });
  try {
    const r = await fetchJson(`${d2.url}/ingest/chain`, { method: 'POST', body: [{ n: 9, keep: 'no' }] });
    assert.equal(r.status, 202);
    await until(async () => (await fetchJson(`${d2.url}/api/stats`)).body.streams.chain.filtered === 1, 'filtered 1', 10000);
    assert.equal((await fetchJson(`${d2.url}/api/stats`)).body.streams.chain.processed, 0);
  } finally {
    await d2.stop();
  }
});

test('a split fans out: the next links see every part', async () => {
  await post([{ n: 10, split_at: 'a', split: 3, tag: 'split' }]);
  const parts = await until(() => {
    const got = drain().filter((e) => e.tag === 'split');
    return got.length >= 3 && got;
  }, 'three parts', 10000);
  assert.deepEqual(parts.map((e) => e.part).sort(), [0, 1, 2]);
  for (const p of parts) assert.deepEqual(p.hops, ['a', 'b']);
});

test('a link that passes nothing on hands the next link its event as it came', async () => {
  await post([{ n: 11, pass_at: 'a', tag: 'pass' }]);
  const [e] = await waitSeen((x) => x.tag === 'pass', 'the passed event');
  assert.deepEqual(e.hops, ['b']);
  assert.equal(e.seen_a, undefined);
});

test('state moves with the verdict: a RETRY at the last link takes back what the first links staged', async () => {
  // Ten events in a row, the fifth retried once by the last link: each
  // link's committed counter must have grown by exactly one per event.
  const base = 100;
  await post(Array.from({ length: 10 }, (_, i) => ({ n: base + i, tag: 'retry', retry_once: i === 4 })));
  const got = await until(() => {
    const r = drain().filter((e) => e.tag === 'retry');
    return r.length >= 10 && r;
  }, 'ten events', 10000);
  assert.deepEqual(got.map((e) => e.n), Array.from({ length: 10 }, (_, i) => base + i));
  for (const k of ['seen_a', 'seen_b']) {
    const v = got.map((e) => e[k]);
    for (let i = 1; i < v.length; i++) assert.equal(v[i], v[i - 1] + 1, `${k}: ${v}`);
  }
  assert.ok((await stats()).retried >= 1);
});

test('a link emitting past the bound fails the event into the dead letter', async () => {
  const before = await stats();
  await post([{ n: 200, flood_at: 'a', tag: 'flood' }]);
  await until(async () => (await stats()).failed > before.failed, 'the event dead', 10000);
  assert.equal((await stats()).dead_reasons.processor_error - before.dead_reasons.processor_error, 1);
  assert.equal(drain().some((e) => e.tag === 'flood'), false);
});

test('a reload that swaps one link loses no event, and the new link takes over', async () => {
  const reloads = (await fetchJson(`${d.url}/api/stats`)).body.reload.reloads;
  let n = 1000;
  let stop = false;
  const sent = [];
  const producer = (async () => {
    while (!stop) {
      const batch = Array.from({ length: 20 }, () => ({ n: n++, tag: 'flow' }));
      await post(batch);
      sent.push(...batch.map((e) => e.n));
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  await until(() => sent.length >= 200, 'events flowing', 10000);
  await d.writeConfig(yaml('b2'));
  d.signal('SIGHUP');
  await until(async () => (await fetchJson(`${d.url}/api/stats`)).body.reload.reloads > reloads, 'reloaded', 10000);
  await until(() => drain().some((e) => e.tag === 'flow' && e.hops.includes('b2')), 'the new link in use', 10000);
  stop = true;
  await producer;
  const flows = await until(() => {
    const got = new Set(drain().filter((e) => e.tag === 'flow').map((e) => e.n));
    return sent.every((x) => got.has(x)) && got;
  }, `all ${sent.length} events through the chain`, 15000);
  assert.equal(flows.size, sent.length);
  const hops = new Set(drain().filter((e) => e.tag === 'flow').map((e) => e.hops.join('>')));
  assert.deepEqual([...hops].sort(), ['a>b', 'a>b2']);
  assert.equal((await fetchJson(`${d.url}/api/stats`)).body.reload.failures, 0);
});
