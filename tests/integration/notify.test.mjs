// sophiad under a service manager: the sd_notify(3) protocol that
// sophiad.service (Type=notify) relies on, checked against the daemon just
// built with the repository's default configuration. scripts/package-notify.py
// (also run by scripts/package-test on the installed package) is the
// manager: it owns the NOTIFY_SOCKET and wants READY=1 with a STATUS=,
// a healthy /healthz, RELOADING=1 (with MONOTONIC_USEC) then READY=1 on
// SIGHUP, STOPPING=1 and exit 0 on SIGTERM.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort } from './lib/daemon.mjs';

const SRC = process.env.SOPHIA_SOURCE_DIR;

test('READY=1, RELOADING=1 + READY=1 on SIGHUP, STOPPING=1 and exit 0', async () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sophia-notify-'));
  try {
    // The default file, with the memory index in this test's directory.
    const yaml = readFileSync(path.join(SRC, 'config', 'sophia.yaml'), 'utf8');
    const index = path.join(dir, 'state', 'memory.index');
    const moved = yaml.replace(/\n {2}index_path: [^\n]*/, `\n  index_path: ${index}`);
    assert.notEqual(moved, yaml, 'config/sophia.yaml has no memory.index_path line');
    const config = path.join(dir, 'sophia.yaml');
    writeFileSync(config, moved);
    const port = await freePort();
    const r = spawnSync('python3',
      [path.join(SRC, 'scripts', 'package-notify.py'), process.env.SOPHIAD, config, `127.0.0.1:${port}`],
      { encoding: 'utf8', timeout: 120000 });
    assert.equal(r.status, 0, `package-notify.py failed:\n${r.stdout}\n${r.stderr}`);
    assert.match(r.stdout, /got \['READY=1', 'STATUS=running on 127\.0\.0\.1:\d+ \(\d+ plugins, \d+ streams\)'\]/);
    assert.match(r.stdout, /got \['RELOADING=1', 'MONOTONIC_USEC=\d+', 'STATUS=reloading the configuration'\]/);
    assert.match(r.stdout, /STATUS=running on .*configuration reloaded .*reload #1/);
    assert.match(r.stdout, /got \['STOPPING=1', 'STATUS=shutting down/);
    assert.match(r.stdout, /READY=1, RELOADING=1, READY=1, STOPPING=1, exit 0/);
    // With PostgreSQL the memory index was made where the file says.
    if (process.env.SOPHIA_PG_URL) assert.ok(existsSync(path.dirname(index)), 'no state directory');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
