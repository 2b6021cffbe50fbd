// A reload that replaces an instance retires the old one (fini, then its
// module closed). A plugin whose fini only frees its own state may say so
// (SOPHIA_PLUGIN_FINI_OFF_LOOP, sdk.h): its fini then runs on a thread of
// its own, so freeing a big state (the patterns correlator's 100k keys
// take seconds) does not stall the loop. tests/plugins/slow_fini.c records
// the thread its fini ran on and can be held inside fini until the test
// releases it: meanwhile the daemon must answer and process, and once
// released it must close the module and stop cleanly (ASan under
// --sanitize).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { startDaemon, fetchJson, until } from './lib/daemon.mjs';

const config = (dir, tag, hold) => `
plugins:
  path: ["@TEST_PLUGIN_DIR@"]
  instances:
    sf: {plugin: slow_fini, options: {dir: "${dir}", tag: ${tag}, hold: ${hold}}}
streams:
  ev: {processor: sf}
`;

test('a retired instance whose plugin allows it is finished off the loop', async (t) => {
  const dir = await mkdtemp(path.join(process.env.SOPHIA_TEST_TMP || os.tmpdir(), 'sophia-fini-'));
  const d = await startDaemon({ yaml: config(dir, 'a', true), env: { SOPHIA_REDIS_URL: '', SOPHIA_PG_URL: '' } });
  t.after(() => d.stop());
  const reloads = async () => (await fetchJson(`${d.url}/api/stats`)).body.reload.reloads;
  const before = await reloads();
  await d.writeConfig(config(dir, 'b', false)); // new options: a new instance
  d.signal('SIGHUP');
  await until(async () => (await reloads()) > before, 'the reload');
  await until(() => existsSync(path.join(dir, 'fini-a')), 'the old instance\'s fini started');
  assert.equal((await readFile(path.join(dir, 'fini-a'), 'utf8')).trim(), 'worker');
  // fini-a is still held: the loop answers and the new instance processes
  assert.equal((await fetchJson(`${d.url}/healthz`)).status, 200);
  const posted = await fetchJson(`${d.url}/ingest/ev`, { method: 'POST', body: [{ n: 1 }] });
  assert.equal(posted.status, 202);
  await until(async () => (await fetchJson(`${d.url}/api/stats`)).body.streams.ev.processed >= 1, 'processed');
  await writeFile(path.join(dir, 'release-a'), '');
  await d.stop();
  // the instance still running at shutdown is finished on the loop
  assert.equal((await readFile(path.join(dir, 'fini-b'), 'utf8')).trim(), 'loop');
});
