// pg_table classifies SQL errors by SQLSTATE (core/host/host_io.c): an
// error another try may cure is retried like an outage, one the
// statement would repeat fails its events for good. Against the shared
// PostgreSQL, on a database of the test's own: a session of the test
// holds an ACCESS EXCLUSIVE lock on the output's table, so each INSERT
// waits out the output connection's statement_timeout (57014, query
// canceled): the batch is retried, nothing is dead-lettered, and once the
// lock goes every event is a row. Then a CHECK constraint the rows break
// (23514) refuses the batch for good: its event is dead-lettered, and
// the output's log line names the SQLSTATE.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { startDaemon, fetchJson, until } from './lib/daemon.mjs';
import { ingest, publishes } from './lib/outputs.mjs';
import { pgQuery, createDatabase, dropDatabase } from './lib/servers.mjs';

let db;
let d;

before(async () => {
  db = await createDatabase('outsqlstate');
  // libpq reads %20, not URLSearchParams' '+', as a blank
  const u = `${db}${db.includes('?') ? '&' : '?'}options=${encodeURIComponent('-c statement_timeout=200')}`;
  d = await startDaemon({ yaml: `
plugins:
  path: ["@TEST_PLUGIN_DIR@"]
  instances:
    act: {plugin: actions}
    rows:
      plugin: pg_table
      options: {url: "${u}", table: public.out_rows, batch_size: 10, flush_interval: 0.01, retry_base: 0.05, retry_cap: 0.2}
streams:
  st: {processor: act, durable: false, outputs: [rows], max_attempts: 2, retry_base: 0.05}
` });
  await ingest(d, 'st', publishes(1, 'first')); // the table is made
  await until(async () => (await rowsOf('first')) === 1, 'the first row');
});

after(async () => {
  if (d) await d.stop();
  if (db) await dropDatabase(db).catch(() => {});
});

async function rowsOf(tag) {
  const r = await pgQuery(`SELECT count(*) FROM out_rows WHERE record->'event'->>'tag' = '${tag}'`,
    { url: db }).catch(() => [['0']]);
  return Number(r[0][0]);
}

const stats = async () => (await fetchJson(`${d.url}/api/stats`)).body;

/** A psql session holding an ACCESS EXCLUSIVE lock on out_rows until release(). */
async function holdLock() {
  const bin = process.env.SOPHIA_PG_BIN;
  const psql = bin && existsSync(path.join(bin, 'psql')) ? path.join(bin, 'psql') : 'psql';
  const p = spawn(psql, ['-X', '-q', '-A', '-t', '-d', db], { stdio: ['pipe', 'pipe', 'inherit'] });
  let out = '';
  p.stdout.on('data', (c) => (out += c));
  p.stdin.write('BEGIN; LOCK TABLE out_rows IN ACCESS EXCLUSIVE MODE; SELECT \'locked\';\n');
  await until(() => out.includes('locked'), 'the lock taken');
  return () => new Promise((resolve) => {
    p.on('exit', resolve);
    p.stdin.end('COMMIT;\n');
  });
}

test('a statement_timeout behind a lock (SQLSTATE 57014) is retried, then delivered', async () => {
  const release = await holdLock();
  let released = false;
  try {
    const mark = d.stderrLines.length;
    await ingest(d, 'st', publishes(5, 'locked'));
    await d.waitForStderr(/instance=rows .*SQLSTATE 57014/, undefined, mark);
    await until(async () => (await stats()).outputs.rows.retries >= 2, 'the batch retried');
    const s = await stats();
    assert.equal(s.streams.st.dead, 0, 'not refused for good');
    assert.equal(s.outputs.rows.failed, 0);
    await release();
    released = true;
  } finally {
    if (!released) await release();
  }
  await until(async () => (await rowsOf('locked')) === 5, 'all 5 rows once the lock is gone');
  const s = await stats();
  assert.equal(s.streams.st.dead, 0);
  assert.equal(s.outputs.rows.failed, 0);
});

test('a constraint the rows break (SQLSTATE 23514) is for good: dead-lettered', async () => {
  const mark = d.stderrLines.length;
  await pgQuery("ALTER TABLE out_rows ADD CONSTRAINT no_bad CHECK (record->'event'->>'tag' IS DISTINCT FROM 'bad')",
    { url: db });
  await ingest(d, 'st', publishes(1, 'bad'));
  await until(async () => (await stats()).streams.st.dead === 1, 'the event dead-lettered');
  const s = await stats();
  assert.ok(s.outputs.rows.failed >= 1, JSON.stringify(s.outputs.rows));
  assert.match(JSON.stringify(s.streams.st.dead_letters), /effect not durable: invalid argument/);
  await d.waitForStderr(/instance=rows .*violates check constraint.*SQLSTATE 23514/, undefined, mark);
  assert.equal(await rowsOf('bad'), 0);
});
