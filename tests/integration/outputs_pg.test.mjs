// sophia-test: run-serial
// The pg_table output (plugins/outputs/pg_table, SDK 1.2): each batch of
// processed events and alerts goes into a PostgreSQL table, created when
// missing, in one multi-row INSERT, on a database of the test's own. The
// shared PostgreSQL is stopped and started again (hence run-serial):
// meanwhile the events stay pending in their durable stream's Redis
// entries, unacknowledged, and once it is back every accepted event is a
// row (at least once).
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { startDaemon, fetchJson, until } from './lib/daemon.mjs';
import { ingest, pendingEntries, publishes } from './lib/outputs.mjs';
import {
  redisCommand, pgQuery, createDatabase, dropDatabase, stopPostgres, startPostgres,
} from './lib/servers.mjs';

const run = `${process.pid}-${Date.now()}`;
const srcKey = `out:pg:src:${run}`;
let db;
let d;

const yaml = () => `
plugins:
  path: ["@TEST_PLUGIN_DIR@"]
  instances:
    act:
      plugin: actions
    rows:
      plugin: pg_table
      options:
        url: ${db}
        table: public.sophia_out
        batch_size: 8
        flush_interval: 0.02
        retry_base: 0.05
        retry_cap: 0.5
streams:
  st:
    processor: act
    outputs: [rows]
    durable: true
    redis:
      key: ${srcKey}
      group: g
      block: 200ms
`;

before(async () => {
  db = await createDatabase('outputs');
  d = await startDaemon({ yaml: yaml() });
});

after(async () => {
  if (d) await d.stop();
  await redisCommand(['DEL', srcKey]).catch(() => {});
  if (db) await dropDatabase(db).catch(() => {});
});


const eventNs = async (tag) => new Set((await pgQuery(
  `SELECT record->'event'->>'n' FROM sophia_out WHERE type = 'event' AND record->'event'->>'tag' = '${tag}'`,
  { url: db },
).catch(() => [])).map((r) => Number(r[0])));

test('events and alerts become rows of a table made for them', async () => {
  const evs = [];
  for (let n = 0; n < 20; n++) {
    evs.push(n === 5
      ? { op: 'alert', alert_type: 'y', severity: 'info', message: 'note', n, tag: 'a' }
      : { op: 'publish', data: { n }, n, tag: 'a' });
  }
  await ingest(d, 'st', evs);
  await until(async () => (await eventNs('a')).size === 20, '20 event rows');
  const [[stream, eventId, received]] = await pgQuery(
    "SELECT stream, event_id, received_at IS NOT NULL FROM sophia_out WHERE type = 'event' LIMIT 1",
    { url: db },
  );
  assert.equal(stream, 'st');
  assert.match(eventId, /^\d+-\d+$/);
  assert.equal(received, 't');
  const alerts = await pgQuery(
    "SELECT record->'alert'->>'message', event_id FROM sophia_out WHERE type = 'alert'", { url: db },
  );
  assert.equal(alerts.length, 1);
  assert.equal(alerts[0][0], 'note');
  assert.match(alerts[0][1], /^\d+-\d+$/);
  await until(async () => (await pendingEntries(srcKey)) === 0, 'all acknowledged');
});

test('PostgreSQL stops and starts again: pending meanwhile, then every event a row', async () => {
  await stopPostgres('fast');
  try {
    await ingest(d, 'st', publishes(30, 'b'));
    await until(async () => (await pendingEntries(srcKey)) === 30, '30 entries pending while PostgreSQL is down');
    await until(async () => (await fetchJson(`${d.url}/api/stats`)).body.outputs.rows.retries >= 2,
      'the output retried');
    assert.equal(await pendingEntries(srcKey), 30, 'nothing acknowledged undelivered');
  } finally {
    await startPostgres();
  }
  await until(async () => (await eventNs('b')).size === 30, 'all 30 rows', 30000);
  await until(async () => (await pendingEntries(srcKey)) === 0, 'then acknowledged');
  const s = (await fetchJson(`${d.url}/api/stats`)).body;
  assert.equal(s.streams.st.failed, 0);
});
