// `sophiad --check` and start-up refusals: configuration and plugin
// problems are reported as FILE:LINE:COL: message, exit 1, nothing listens.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, realpathSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runSophiad } from './lib/daemon.mjs';

const SRC = process.env.SOPHIA_SOURCE_DIR;

function writeYaml(text) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'sophia-check-'));
  const file = path.join(dir, 'sophia.yaml');
  writeFileSync(file, text
    .replaceAll('@PLUGIN_DIR@', process.env.SOPHIA_PLUGIN_DIR)
    .replaceAll('@TEST_PLUGIN_DIR@', process.env.SOPHIA_TEST_PLUGIN_DIR));
  return file;
}

test('--version and --help', async () => {
  const v = await runSophiad(['--version']);
  assert.equal(v.code, 0);
  assert.match(v.stdout, /^sophiad \d+\.\d+\.\d+ \(SDK 1\.\d+\)/);
  const h = await runSophiad(['--help']);
  assert.equal(h.code, 0);
  assert.match(h.stdout, /--check/);
  assert.doesNotMatch(h.stdout, /--man/); // the build's generators stay hidden
});

test('--version names the SDK ABI and every library with its version', async () => {
  const v = await runSophiad(['--version']);
  assert.equal(v.code, 0, v.stderr);
  const sdk = readFileSync(path.join(SRC, 'sdk', 'include', 'sophia', 'sdk.h'), 'utf8');
  const major = sdk.match(/#define SOPHIA_SDK_VERSION_MAJOR (\d+)/)[1];
  const minor = sdk.match(/#define SOPHIA_SDK_VERSION_MINOR (\d+)/)[1];
  assert.match(v.stdout, new RegExp(`^plugin SDK ABI ${major}\\.${minor}$`, 'm'));
  for (const lib of ['libevent', 'libwebsockets', 'hiredis', 'libpq', 'jansson', 'libyaml',
    'openssl', 'libsystemd', 'faiss']) {
    assert.match(v.stdout, new RegExp(`^${lib} \\d+(\\.\\d+)*\\S*( \\(build\\))?$`, 'm'), `${lib} in:\n${v.stdout}`);
  }
  // Run-time versions are the loaded libraries': libpq's from PQlibVersion.
  assert.match(v.stdout, /^libpq 1\d\.\d+$/m);
});

test('--man and --man-config print sophiad(8) and sophia.yaml(5) in roff', async () => {
  const d = await runSophiad(['--man']);
  assert.equal(d.code, 0, d.stderr);
  assert.match(d.stdout, /^\.TH SOPHIAD 8 /);
  assert.match(d.stdout, /\\-\\-check/);
  const y = await runSophiad(['--man-config']);
  assert.equal(y.code, 0, y.stderr);
  assert.equal(y.stderr, '', 'keys without a description');
  assert.match(y.stdout, /^\.TH SOPHIA\.YAML 5 /);
  assert.match(y.stdout, /^\.B server\.listen\nType: HOST:PORT; default: 127\.0\.0\.1:8080\.$/m);
});

test('the default configuration passes --check and prints the option table', async () => {
  // The file itself: it names no plugin directory, sophiad finds this
  // build's plugins from its own location and says where it looked.
  const file = path.join(SRC, 'config', 'sophia.yaml');
  const r = await runSophiad(['--check', '-c', file]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`^plugin dir: ${realpathSync(process.env.SOPHIA_PLUGIN_DIR)} \\(default\\)$`, 'm'));
  assert.match(r.stdout, /metrics: processor metrics/);
  assert.match(r.stdout, /default_dashboard/);
  assert.match(r.stdout, /: ok$/m);
});

test('a plugin built for another SDK major is refused with both versions', async () => {
  const file = writeYaml(`plugins:
  path: ["@TEST_PLUGIN_DIR@"]
  instances:
    bad:
      plugin: abi_major2
`);
  for (const args of [['--check', '-c', file], ['-c', file, '--listen', '127.0.0.1:1']]) {
    const r = await runSophiad(args);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`^${file.replaceAll('/', '\\/')}:4:5: plugin 'abi_major2' \\(.*abi_major2\\.so\\) was built for SDK 2\\.0; this sophiad provides SDK 1\\.1 \\(major differs\\)$`, 'm'));
  }
});

test('malformed YAML is reported with line and column', async () => {
  const file = writeYaml('server:\n  listen: [127.0.0.1:8080\nlog:\n  level: info\n');
  const r = await runSophiad(['--check', '-c', file]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, new RegExp(`^${file.replaceAll('/', '\\/')}:\\d+:\\d+: .+`, 'm'));
});

test('every problem is reported, each at its own position', async () => {
  const file = writeYaml(`server:
  listen: 127.0.0.1:8080
  max_bodyy: 10
log:
  level: loud
streams:
  s1:
    processor: nope
`);
  const r = await runSophiad(['--check', '-c', file]);
  assert.equal(r.code, 1);
  const lines = r.stderr.trim().split('\n').filter((l) => l.startsWith(file));
  assert.ok(lines.some((l) => l.startsWith(`${file}:3:3: `) && /max_bodyy/.test(l)), r.stderr);
  assert.ok(lines.some((l) => l.startsWith(`${file}:5:10: `) && /level/.test(l)), r.stderr);
  assert.ok(lines.some((l) => /nope/.test(l)), r.stderr);
});

test('plugin options are validated against the plugin table', async () => {
  const file = writeYaml(`plugins:
  path: ["@PLUGIN_DIR@"]
  instances:
    m:
      plugin: metrics
      options:
        ttl: soon
        colour: blue
`);
  const r = await runSophiad(['--check', '-c', file]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, new RegExp(`:7:14: .*ttl`));
  assert.match(r.stderr, new RegExp(`:8:9: .*colour`));
});

test('a non-loopback listener without tokens is refused', async () => {
  const file = writeYaml('server:\n  listen: 0.0.0.0:8080\n');
  const r = await runSophiad(['--check', '-c', file], { SOPHIA_INGEST_TOKENS: '', SOPHIA_JWT_SECRET: '' });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /not loopback/);
});

test('a WebSocket JWT secret under 32 bytes is a configuration error', async () => {
  const file = writeYaml('websocket:\n  auth:\n    secret_env: SOPHIA_JWT_SECRET\n');
  const r = await runSophiad(['--check', '-c', file], { SOPHIA_JWT_SECRET: 'short-secret' });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /:3:17: .*SOPHIA_JWT_SECRET is 12 bytes; HS256 needs at least 32/);
  // The daemon refuses to start the same way.
  const start = await runSophiad(['-c', file, '--listen', '127.0.0.1:0'], { SOPHIA_JWT_SECRET: 'short-secret' });
  assert.equal(start.code, 1);
  assert.match(start.stderr, /SOPHIA_JWT_SECRET is 12 bytes/);
  const ok = await runSophiad(['--check', '-c', file], { SOPHIA_JWT_SECRET: 'x'.repeat(32) });
  assert.equal(ok.code, 0, ok.stderr);
  // The new websocket.jwt keys are checked like every other.
  const typo = writeYaml('websocket:\n  jwt:\n    require_exp: maybe\n    audiance: x\n');
  const t = await runSophiad(['--check', '-c', typo]);
  assert.equal(t.code, 1);
  assert.match(t.stderr, /:3:18: .*expected a boolean/);
  assert.match(t.stderr, /:4:5: unknown key 'audiance' in websocket.jwt/);
});
