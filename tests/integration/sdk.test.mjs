// The SDK as a third party meets it: `cmake --install` into a fresh
// prefix, the example processor (sdk/examples/pagerduty) copied out of the
// source tree and built against that prefix alone - once with CMake
// (find_package(SophiaSDK)), once with make (pkg-config sophia-sdk) - then
// both builds loaded by the *installed* sophiad through YAML, fed a
// PagerDuty webhook over POST /ingest/<stream>, and their updates read by a
// real WebSocket client.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { cp, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import {
  startDaemon, runSophiad, fetchJson, wsConnect, nextMessage,
} from './lib/daemon.mjs';

const run = promisify(execFile);
const SOURCE = process.env.SOPHIA_SOURCE_DIR;
const BUILD = process.env.SOPHIA_BUILD_DIR;
const EXAMPLE = path.join(SOURCE, 'sdk', 'examples', 'pagerduty');
const EVENTS = readFileSync(path.join(EXAMPLE, 'events.ndjson'), 'utf8')
  .split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
const TRIGGERED = EVENTS[0];
const SHARE_MARK = 'installed-share-dir-marker';

let tmp, prefix, src;

// An environment that cannot find anything but the temp prefix: no
// inherited search paths, and no compiler flags from the harness (ASan).
function cleanEnv(extra = {}) {
  const env = { ...process.env, ...extra };
  for (const k of ['CMAKE_PREFIX_PATH', 'PKG_CONFIG_PATH', 'CFLAGS', 'LDFLAGS', 'CPATH', 'C_INCLUDE_PATH']) {
    if (!(k in extra)) delete env[k];
  }
  return env;
}

async function sh(cmd, args, opts = {}) {
  try {
    return await run(cmd, args, { env: cleanEnv(), maxBuffer: 16 << 20, ...opts });
  } catch (e) {
    throw new Error(`${cmd} ${args.join(' ')} failed (${e.code}):\n${e.stdout}\n${e.stderr}`);
  }
}

before(async () => {
  assert.ok(BUILD, 'SOPHIA_BUILD_DIR is not set: run through ctest');
  tmp = await mkdtemp(path.join(os.tmpdir(), 'sophia-sdk-'));
  prefix = path.join(tmp, 'prefix');
  src = path.join(tmp, 'pagerduty');
  await sh('cmake', ['--install', BUILD, '--prefix', prefix]);
  await cp(EXAMPLE, src, { recursive: true });
});

after(async () => { if (tmp) await rm(tmp, { recursive: true, force: true }); });

test('cmake --install lays out the SDK, the daemon, plugins, share files and a config', async () => {
  for (const f of [
    'include/sophia/sdk.h', 'lib/pkgconfig/sophia-sdk.pc',
    'lib/cmake/SophiaSDK/SophiaSDKConfig.cmake', 'lib/cmake/SophiaSDK/SophiaSDKConfigVersion.cmake',
    'bin/sophiad', 'bin/sophia-plugin-test', 'lib/sophia/plugins/metrics.so',
    'share/sophia/index.html', 'etc/sophia/sophia.yaml',
  ]) assert.ok(existsSync(path.join(prefix, f)), `${f} installed`);
  assert.equal(await readFile(path.join(prefix, 'include/sophia/sdk.h'), 'utf8'),
    await readFile(path.join(SOURCE, 'sdk/include/sophia/sdk.h'), 'utf8'));

  const pc = { env: cleanEnv({ PKG_CONFIG_PATH: path.join(prefix, 'lib/pkgconfig') }) };
  const ver = await sh('pkg-config', ['--modversion', 'sophia-sdk'], pc);
  const sdkh = await readFile(path.join(SOURCE, 'sdk/include/sophia/sdk.h'), 'utf8');
  const major = sdkh.match(/SOPHIA_SDK_VERSION_MAJOR (\d+)/)[1];
  const minor = sdkh.match(/SOPHIA_SDK_VERSION_MINOR (\d+)/)[1];
  assert.equal(ver.stdout.trim(), `${major}.${minor}`);
  const dir = await sh('pkg-config', ['--variable=plugindir', 'sophia-sdk'], pc);
  assert.equal(path.resolve(dir.stdout.trim()), path.join(prefix, 'lib/sophia/plugins'));

  // The installed default configuration finds the installed plugins.
  const check = await runSophiad(['-c', path.join(prefix, 'etc/sophia/sophia.yaml'), '--check'], {},
    { bin: path.join(prefix, 'bin/sophiad') });
  assert.equal(check.code, 0, check.stderr);
  assert.match(check.stdout + check.stderr, new RegExp(`${prefix}/lib/sophia/plugins/metrics\\.so`));
});

test('find_package(SophiaSDK) applies the ABI rule: same major, minor not newer', async () => {
  const probe = path.join(tmp, 'probe');
  const configure = async (want) => {
    await rm(probe, { recursive: true, force: true });
    await mkdir(probe, { recursive: true });
    await writeFile(path.join(probe, 'CMakeLists.txt'), `cmake_minimum_required(VERSION 3.16)
project(probe NONE)
find_package(SophiaSDK ${want} REQUIRED)
get_target_property(inc Sophia::SDK INTERFACE_INCLUDE_DIRECTORIES)
message(STATUS "SDK \${SophiaSDK_VERSION} include=\${inc}")
`);
    return run('cmake', ['-S', probe, '-B', path.join(probe, 'b'), `-DCMAKE_PREFIX_PATH=${prefix}`],
      { env: cleanEnv() }).then((r) => ({ ok: true, out: r.stdout }), (e) => ({ ok: false, out: e.stdout + e.stderr }));
  };
  const ok = await configure('1.0');
  assert.ok(ok.ok, ok.out);
  assert.match(ok.out, new RegExp(`SDK 1\\.\\d+ include=${prefix}/include`));
  const newer = await configure('1.99');
  assert.ok(!newer.ok, 'a newer minor than installed must not be found');
  const major = await configure('2.0');
  assert.ok(!major.ok, 'another major must not be found');
  assert.match(major.out, /SophiaSDK/);
});

test('the example builds out of tree with CMake and with make, against the prefix only', async () => {
  const b = path.join(src, 'build');
  await sh('cmake', ['-S', src, '-B', b, `-DCMAKE_PREFIX_PATH=${prefix}`,
    '-DCMAKE_EXPORT_COMPILE_COMMANDS=ON', '-DCMAKE_C_FLAGS=-Werror']);
  await sh('cmake', ['--build', b]);
  assert.ok(existsSync(path.join(b, 'pagerduty.so')));
  const cc = await readFile(path.join(b, 'compile_commands.json'), 'utf8');
  assert.ok(cc.includes(`${prefix}/include`), cc);
  assert.ok(!cc.includes(SOURCE), 'nothing from the source tree is used');

  const mk = await sh('make', ['-C', src, 'CFLAGS=-O2 -Werror'],
    { env: cleanEnv({ PKG_CONFIG_PATH: path.join(prefix, 'lib/pkgconfig') }) });
  assert.ok(existsSync(path.join(src, 'pagerduty.so')));
  assert.ok(mk.stdout.includes('lib/pkgconfig/../../include'), mk.stdout);
  assert.ok(!mk.stdout.includes(SOURCE));

  // Only the descriptor is exported.
  for (const so of [path.join(b, 'pagerduty.so'), path.join(src, 'pagerduty.so')]) {
    const nm = await sh('nm', ['-D', '--defined-only', so]);
    const syms = nm.stdout.split('\n').filter((l) => l.trim()).map((l) => l.split(' ').pop())
      .filter((s) => !s.startsWith('_'));
    assert.deepEqual(syms, ['sophia_plugin_v1'], so);
  }
});

// The guide's "Start here" block, steps 2 and 3, run as written: only its
// $HOME (whose sophia/ is the prefix the before() hook installed) and its
// /tmp/pagerduty (a private directory) differ. A guide that drifted from
// the example or the installed layout fails here.
test('sdk/README.md "Start here" steps 2 and 3 work as written', async () => {
  const readme = await readFile(path.join(SOURCE, 'sdk', 'README.md'), 'utf8');
  const block = readme.slice(readme.indexOf('## Start here')).match(/```sh\n([\s\S]*?)```/)[1];
  const from = block.indexOf('# 2.');
  const to = block.indexOf('# 4.');
  assert.ok(from >= 0 && to > from, 'the block still has steps 2 to 4');
  const home = path.join(tmp, 'home');
  const work = path.join(tmp, 'start-here');
  await mkdir(home, { recursive: true });
  await symlink(prefix, path.join(home, 'sophia'));
  const script = block.slice(from, to).replaceAll('/tmp/pagerduty', work);
  const r = await sh('bash', ['-euo', 'pipefail', '-c', script],
    { cwd: SOURCE, env: cleanEnv({ HOME: home }) });
  assert.ok(existsSync(path.join(work, 'build', 'pagerduty.so')), 'the CMake build');
  assert.ok(existsSync(path.join(work, 'pagerduty.so')), 'the make build');
  const lines = r.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l));
  const verdicts = lines.filter((l) => 'verdict' in l);
  assert.equal(verdicts.length, EVENTS.length, r.stdout);
  assert.ok(lines.some((l) => l.action === 'publish' && l.topics.includes('dashboard:oncall')), r.stdout);
});

test("sdk/README.md's minimal processor compiles as C99 against the prefix and runs", async () => {
  const readme = await readFile(path.join(SOURCE, 'sdk', 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('## A minimal processor'));
  const code = section.match(/```c\n([\s\S]*?)```/)[1];
  const dir = path.join(tmp, 'hello');
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, 'hello.c'), code);
  const pc = { env: cleanEnv({ PKG_CONFIG_PATH: path.join(prefix, 'lib/pkgconfig') }) };
  const cflags = (await sh('pkg-config', ['--cflags', 'sophia-sdk'], pc)).stdout.trim().split(/\s+/);
  await sh('cc', ['-std=c99', '-pedantic', '-Wall', '-Wextra', '-Werror', ...cflags, '-shared',
    '-o', path.join(dir, 'hello.so'), path.join(dir, 'hello.c')]);
  // Nothing else runs in this test: a synchronous child is fine.
  const r = spawnSync(path.join(prefix, 'bin', 'sophia-plugin-test'),
    [path.join(dir, 'hello.so'), '--options', 'topic: greet'], { input: '{"a":1}\n', encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(lines[0], {
    event: 1, action: 'publish', type: 'data', topics: ['updates:data', 'stream:test', 'greet'], data: { a: 1 },
  });
  assert.deepEqual(lines[1], { event: 1, verdict: 'ok', actions: 1 });
});

test('both builds load into the installed sophiad; an ingested webhook reaches /ws', async () => {
  const cmakeSo = path.join(src, 'build', 'pagerduty.so');
  assert.ok(existsSync(cmakeSo) && existsSync(path.join(src, 'pagerduty.so')), 'built by the previous test');
  // Marks the installed page, so serving the source tree's copy would show.
  const index = path.join(prefix, 'share', 'sophia', 'index.html');
  await writeFile(index, `${await readFile(index, 'utf8')}\n<!-- ${SHARE_MARK} -->\n`);
  // Modules are names on plugins.path, never paths: the CMake build is
  // reached through a link with its own name in a directory of its own.
  const linkDir = path.join(src, 'cmake-link');
  await mkdir(linkDir, { recursive: true });
  await rm(path.join(linkDir, 'pagerduty_cmake.so'), { force: true });
  await symlink(cmakeSo, path.join(linkDir, 'pagerduty_cmake.so'));
  const d = await startDaemon({
    bin: path.join(prefix, 'bin', 'sophiad'),
    yaml: `
plugins:
  path: ["${src}", "${linkDir}"]
  instances:
    pd:
      plugin: pagerduty
      options:
        dashboard: oncall
        ignore_services: [PIGNORED]
    pd_cmake:
      plugin: pagerduty_cmake
      options:
        dashboard: oncall2
        alert_urgency: none
streams:
  pagerduty:
    processor: pd
  pagerduty_cmake:
    processor: pd_cmake
`,
  });
  try {
    // --check loads both and prints each one's file and option table.
    const check = await runSophiad(['-c', d.configPath, '--check'], {}, { bin: path.join(prefix, 'bin', 'sophiad') });
    assert.equal(check.code, 0, check.stderr);
    const said = check.stdout + check.stderr;
    assert.match(said, new RegExp(`instance 'pd': plugin pagerduty 1\\.0\\.0 \\(processor\\), ${src}/pagerduty\\.so`));
    assert.match(said, new RegExp(`instance 'pd_cmake': plugin pagerduty 1\\.0\\.0 \\(processor\\), ${cmakeSo}`));
    assert.match(said, /ignore_services\s+list\s+\[\]\s+service ids or names/);
    const page = await fetch(`${d.url}/`);
    assert.equal(page.status, 200);
    assert.ok((await page.text()).includes(SHARE_MARK), 'dashboard served from the installed share dir');

    const ws = await wsConnect(d.wsUrl);
    ws.send(JSON.stringify({ type: 'subscribe', subscriptions: ['dashboard:oncall', 'dashboard:oncall2', 'alerts:critical'] }));
    await nextMessage(ws, (m) => m.type === 'subscribed');

    // An ignored service first: dropped, so the first update is the real one.
    const ignored = structuredClone(TRIGGERED);
    ignored.event.data.service.id = 'PIGNORED';
    ignored.event.data.id = 'PIGNORED1';
    let res = await fetchJson(`${d.url}/ingest/pagerduty`, { method: 'POST', body: [ignored, TRIGGERED] });
    assert.equal(res.status, 202, res.text);
    assert.deepEqual(res.body, { accepted: 2 });

    const upd = await nextMessage(ws, (m) => m.type === 'data' || m.type === 'alert');
    assert.equal(upd.type, 'data', JSON.stringify(upd));
    assert.equal(upd.dashboard_id, 'oncall');
    assert.equal(upd.data.source, 'pagerduty');
    assert.equal(upd.data.event_type, 'incident.triggered');
    assert.equal(upd.data.open_incidents, 1);
    assert.deepEqual(upd.data.incident, {
      id: 'PGR0VU2', number: 2, title: 'API latency above 2s', status: 'triggered', urgency: 'high',
      priority: 'P1', service: 'API Service', url: 'https://acme.pagerduty.com/incidents/PGR0VU2',
    });
    const alert = await nextMessage(ws, (m) => m.type === 'alert');
    assert.equal(alert.data.alert_type, 'pagerduty_incident');
    assert.equal(alert.data.severity, 'critical');
    assert.equal(alert.data.message, 'P1 incident #2 on API Service: API latency above 2s');
    assert.equal(alert.data.state, 'firing');
    assert.equal(alert.data.alert_id, 'pagerduty:PGR0VU2');
    assert.equal(alert.dashboard_id, 'oncall');

    // Resolving the incident resolves its alert (SDK 1.1 alert_ex).
    const RESOLVED = EVENTS.find((e) => e.event?.event_type === 'incident.resolved');
    res = await fetchJson(`${d.url}/ingest/pagerduty`, { method: 'POST', body: [RESOLVED] });
    assert.equal(res.status, 202, res.text);
    const ended = await nextMessage(ws, (m) => m.type === 'alert');
    assert.equal(ended.data.state, 'resolved');
    assert.equal(ended.data.alert_id, 'pagerduty:PGR0VU2');
    assert.equal(ended.data.severity, 'critical');

    // The CMake build, as a second instance with its own options: no alert
    // (alert_urgency: none), its own dashboard.
    res = await fetchJson(`${d.url}/ingest/pagerduty_cmake`, { method: 'POST', body: EVENTS.slice(0, 2) });
    assert.equal(res.status, 202, res.text);
    const a = await nextMessage(ws, (m) => m.dashboard_id === 'oncall2');
    const b = await nextMessage(ws, (m) => m.dashboard_id === 'oncall2');
    assert.deepEqual([a.data.event_type, b.data.event_type], ['incident.triggered', 'incident.acknowledged']);
    assert.equal(b.data.incident.status, 'acknowledged');
    ws.close();
  } finally {
    await d.stop();
  }
});
