// Helpers the outputs_*.test.mjs share: posting events to a stream, and
// how many entries its durable source has read and not acknowledged.
import assert from 'node:assert/strict';
import { fetchJson } from './daemon.mjs';
import { redisCommand } from './servers.mjs';

/** POSTs `events` as NDJSON to /ingest/<stream> of daemon `d`; asserts 202. */
export async function ingest(d, stream, events) {
  const res = await fetchJson(`${d.url}/ingest/${stream}`, {
    method: 'POST', body: events.map((e) => JSON.stringify(e)).join('\n'),
  });
  assert.equal(res.status, 202, `ingest answered ${res.status}`);
}

/** XPENDING's count on the shared Redis: entries read, not yet XACKed. */
export async function pendingEntries(key, group = 'g') {
  return Number((await redisCommand(['XPENDING', key, group]))[0]);
}

/** `n` actions-plugin events {op: 'publish', n, tag}, one per number. */
export function publishes(n, tag) {
  return Array.from({ length: n }, (_, i) => ({ op: 'publish', data: { n: i }, n: i, tag }));
}
