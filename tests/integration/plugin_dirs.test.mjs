// Where sophiad finds its bundled plugins: from its own location, never
// from the working directory or a path in the configuration. The sophiad
// of this build with configurations that name no plugin directory, a copy
// of the default configuration elsewhere, plugins.path searched before the
// bundled directory, and an installed tree (`cmake --install` into a temp
// prefix) started with its installed default configuration, then moved.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFileSync, mkdtempSync, readdirSync, realpathSync } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { startDaemon, runSophiad, fetchJson } from './lib/daemon.mjs';

const run = promisify(execFile);
const SRC = process.env.SOPHIA_SOURCE_DIR;
const BUILD = process.env.SOPHIA_BUILD_DIR;
const PLUGIN_DIR = realpathSync(process.env.SOPHIA_PLUGIN_DIR);
const TEST_PLUGIN_DIR = realpathSync(process.env.SOPHIA_TEST_PLUGIN_DIR);
// No token from the caller's environment: the daemons listen on loopback.
const ENV = { SOPHIA_INGEST_TOKENS: undefined, SOPHIA_JWT_SECRET: undefined };

const tmp = mkdtempSync(path.join(os.tmpdir(), 'sophia-plugin-dirs-'));
after(() => rm(tmp, { recursive: true, force: true }));

// The bundled plugins: every .so the build wrote to its plugin directory.
const bundled = (dir) => readdirSync(dir).filter((f) => f.endsWith('.so')).map((f) => f.slice(0, -3)).sort();

async function loadedPlugins(d) {
  const res = await fetchJson(`${d.url}/api/stats`);
  assert.equal(res.status, 200);
  return res.body.plugins;
}

function assertAllFrom(plugins, dir) {
  assert.ok(plugins.length > 0, 'some plugins are loaded');
  for (const p of plugins) assert.equal(path.dirname(p.file), dir, `${p.name} loaded from ${p.file}`);
}

test('a configuration without plugins.path loads the bundled plugins of this build', async () => {
  const d = await startDaemon({
    env: ENV,
    yaml: `
plugins:
  instances:
    m: {plugin: metrics}
    wt: {plugin: write_through}
streams:
  metrics: {processor: m}
`,
  });
  try {
    const plugins = await loadedPlugins(d);
    assert.deepEqual(plugins.map((p) => p.plugin).sort(), ['metrics', 'write_through']);
    assertAllFrom(plugins, PLUGIN_DIR);
    // The dashboard is found the same way: this build's source share/.
    const page = await fetch(`${d.url}/`);
    assert.equal(page.status, 200);
    assert.match(await page.text(), /<html/i);
  } finally {
    await d.stop();
  }
});

test('plugins.path is searched first, then the bundled plugins; --check lists both', async () => {
  // A private directory with its own metrics.so: found there, not in the
  // build's directory; echo comes from the test plugins, dedup from neither.
  const own = mkdtempSync(path.join(tmp, 'own-'));
  copyFileSync(path.join(PLUGIN_DIR, 'metrics.so'), path.join(own, 'metrics.so'));
  const yaml = `
plugins:
  path: ["${own}", "@TEST_PLUGIN_DIR@"]
  instances:
    m: {plugin: metrics}
    e: {plugin: echo, options: {topic: "t"}}
    dd: {plugin: dedup}
`;
  const d = await startDaemon({ env: ENV, yaml });
  try {
    const files = Object.fromEntries((await loadedPlugins(d)).map((p) => [p.name, p.file]));
    assert.deepEqual(files, {
      m: path.join(own, 'metrics.so'),
      e: path.join(TEST_PLUGIN_DIR, 'echo.so'),
      dd: path.join(PLUGIN_DIR, 'dedup.so'),
    });
    const check = await runSophiad(['--check', '-c', d.configPath], ENV);
    assert.equal(check.code, 0, check.stderr);
    const dirs = check.stdout.split('\n').filter((l) => l.startsWith('plugin dir: '));
    assert.deepEqual(dirs, [
      `plugin dir: ${own}`,
      `plugin dir: ${TEST_PLUGIN_DIR}`,
      `plugin dir: ${PLUGIN_DIR} (default)`,
    ]);
  } finally {
    await d.stop();
  }
});

test('a copy of the default configuration elsewhere keeps the bundled plugins', async () => {
  const dir = mkdtempSync(path.join(tmp, 'copied-'));
  const config = path.join(dir, 'sophia.yaml');
  copyFileSync(path.join(SRC, 'config', 'sophia.yaml'), config);
  const d = await startDaemon({ env: ENV, config });
  try {
    const plugins = await loadedPlugins(d);
    assertAllFrom(plugins, PLUGIN_DIR);
    // The default configuration uses every bundled plugin.
    assert.deepEqual([...new Set(plugins.map((p) => p.plugin))].sort(), bundled(PLUGIN_DIR));
  } finally {
    await d.stop();
  }
});

test('an installed sophiad finds the installed plugins with the installed default configuration', async () => {
  const prefix = path.join(tmp, 'prefix');
  // A group-writable umask: the installed directories must still be 0755,
  // or plugins.strict_modes would refuse every installed plugin.
  const umask = process.umask(0o002);
  try {
    await run('cmake', ['--install', BUILD, '--prefix', prefix], { maxBuffer: 16 << 20 });
  } finally {
    process.umask(umask);
  }
  const installed = path.join(prefix, 'lib', 'sophia', 'plugins');
  const d = await startDaemon({
    env: ENV,
    bin: path.join(prefix, 'bin', 'sophiad'),
    config: path.join(prefix, 'etc', 'sophia', 'sophia.yaml'),
  });
  try {
    const plugins = await loadedPlugins(d);
    assertAllFrom(plugins, installed);
    assert.deepEqual([...new Set(plugins.map((p) => p.plugin))].sort(), bundled(installed));
  } finally {
    await d.stop();
  }

  // The tree relocates: found relative to the executable, not the prefix
  // it was installed to.
  const moved = path.join(tmp, 'moved');
  await rename(prefix, moved);
  const check = await runSophiad(['--check', '-c', path.join(moved, 'etc', 'sophia', 'sophia.yaml')], ENV,
    { bin: path.join(moved, 'bin', 'sophiad') });
  assert.equal(check.code, 0, check.stderr);
  assert.match(check.stdout, new RegExp(`^plugin dir: ${path.join(moved, 'lib', 'sophia', 'plugins')} \\(default\\)$`, 'm'));
  assert.match(check.stdout, new RegExp(`\\(${path.join(moved, 'lib', 'sophia', 'plugins', 'metrics')}\\.so\\)`));
});
