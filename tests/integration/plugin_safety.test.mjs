// Plugin safety (issue #10 item 5): plugins load only by name from the
// plugins.path directories; a plugin file or directory that someone else
// could replace is refused (sshd's StrictModes); a plugin that crashes or
// hangs in init() is tried in a child first, so it fails --check, the
// start or the reload, never the daemon.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, chown, copyFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fetchJson, runSophiad, startDaemon, timeoutScale, substitute } from './lib/daemon.mjs';

const TP = process.env.SOPHIA_TEST_PLUGIN_DIR;
let tmp;

before(async () => {
  tmp = await mkdtemp(path.join(process.env.SOPHIA_TEST_TMP || os.tmpdir(), 'sophia-ps-'));
});

after(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

let nfile = 0;
async function yamlFile(text) {
  const file = path.join(tmp, `c${++nfile}.yaml`);
  await writeFile(file, substitute(text, tmp));
  return file;
}

const esc = (s) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

function instances(body, extra = '') {
  return `plugins:
  path: ["@TEST_PLUGIN_DIR@"]${extra}
  instances:
${body}`;
}

test('--check names each plugin that crashes in init, with its file and signal, and exits 1', async () => {
  const file = await yamlFile(instances(`    segv:
      plugin: crash_in_init
    ab:
      plugin: crash_in_init
      options: {how: abort}
    ok:
      plugin: echo
      options: {topic: t}
    ex:
      plugin: crash_in_init
      options: {how: exit}
`));
  const r = await runSophiad(['--check', '-c', file]);
  assert.equal(r.code, 1, r.stderr);
  const so = esc(path.join(TP, 'crash_in_init.so'));
  const f = esc(file);
  assert.match(r.stderr, new RegExp(`^${f}:4:5: instance 'segv': plugin 'crash_in_init' \\(${so}\\) crashed in init: SIGSEGV$`, 'm'));
  assert.match(r.stderr, new RegExp(`^${f}:6:5: instance 'ab': plugin 'crash_in_init' \\(${so}\\) crashed in init: SIGABRT$`, 'm'));
  assert.match(r.stderr, new RegExp(`^${f}:12:5: instance 'ex': plugin 'crash_in_init' \\(${so}\\) crashed in init: ${process.env.ASAN_OPTIONS ? '(exit status \\d+|SIGABRT)' : 'exit status 3'}$`, 'm'));
  // (exit() runs LeakSanitizer's exit check in a sanitizer build, which
  // may change the status.)
  assert.doesNotMatch(r.stderr, /'ok'/, 'the good plugin is not blamed');
  assert.equal(r.stderr.trim().split('\n').length, 3, r.stderr);
});

test('start-up with a crashing plugin fails cleanly (exit 1, no signal)', async () => {
  const file = await yamlFile(instances(`    segv:
      plugin: crash_in_init
`));
  const r = await runSophiad(['-c', file, '--listen', '127.0.0.1:1']);
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /crashed in init: SIGSEGV/);
});

test('a plugin that hangs in init is killed after plugins.init_timeout', async () => {
  const file = await yamlFile(instances(`    h:
      plugin: hang_in_init
`, '\n  init_timeout: 0.3'));
  const t0 = Date.now();
  const r = await runSophiad(['--check', '-c', file]);
  const ms = Date.now() - t0;
  assert.equal(r.code, 1, r.stderr);
  assert.match(r.stderr, /:5:5: instance 'h': plugin 'hang_in_init' \(.*hang_in_init\.so\) hung in init: no answer within 0\.3 s \(plugins\.init_timeout\), killed$/m);
  assert.ok(ms < 5000 * timeoutScale, `took ${ms} ms`);
});

test('a module given as a path is refused: only names on plugins.path load', async () => {
  for (const mod of ['../test-plugins/echo', `${TP}/echo`, 'sub/echo', '..']) {
    const file = await yamlFile(instances(`    e:
      plugin: "${mod}"
      options: {topic: t}
`));
    const r = await runSophiad(['--check', '-c', file]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`^${esc(file)}:4:5: instance 'e': plugin '${esc(mod)}' refused: a plugin is a module name looked up in the plugins.path directories, not a path \\(no '/' or '\\.\\.'\\)$`, 'm'));
  }
});

// A private plugin directory holding a copy of echo.so, for mode tests.
async function privateDir(name) {
  const dir = path.join(tmp, name);
  await rm(dir, { recursive: true, force: true });
  const { mkdir } = await import('node:fs/promises');
  await mkdir(dir, { mode: 0o755 });
  await chmod(dir, 0o755);
  await copyFile(path.join(TP, 'echo.so'), path.join(dir, 'echo.so'));
  await chmod(path.join(dir, 'echo.so'), 0o755);
  return dir;
}

async function checkEcho(dir, extra = '') {
  const file = await yamlFile(`plugins:
  path: ["${dir}"]${extra}
  instances:
    e:
      plugin: echo
      options: {topic: t}
`);
  return { file, r: await runSophiad(['--check', '-c', file]) };
}

test('strict modes: a plugin file or directory writable by others, or owned by another user, is refused', async () => {
  const dir = await privateDir('modes');
  const so = path.join(dir, 'echo.so');
  let { file, r } = await checkEcho(dir);
  assert.equal(r.code, 0, `a 0755 file in a 0755 directory loads: ${r.stderr}`);

  await chmod(so, 0o777);
  ({ file, r } = await checkEcho(dir));
  assert.equal(r.code, 1);
  assert.match(r.stderr, new RegExp(`^${esc(file)}:4:5: instance 'e': plugin 'echo' refused: ${esc(so)} is writable by group and others \\(mode 0777\\); fix its permissions or set plugins.strict_modes: false$`, 'm'));

  await chmod(so, 0o775);
  ({ r } = await checkEcho(dir));
  assert.match(r.stderr, /echo\.so is writable by group \(mode 0775\)/);

  ({ r } = await checkEcho(dir, '\n  strict_modes: false'));
  assert.equal(r.code, 0, `strict_modes: false turns the check off: ${r.stderr}`);

  await chmod(so, 0o755);
  await chmod(dir, 0o757);
  ({ r } = await checkEcho(dir));
  assert.equal(r.code, 1);
  assert.match(r.stderr, new RegExp(`refused: ${esc(dir)} is writable by others \\(mode 0757\\)`));
  await chmod(dir, 0o755);

  if (process.getuid && process.getuid() === 0) {
    await chown(so, 65534, 65534);
    ({ r } = await checkEcho(dir));
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`refused: ${esc(so)} is owned by uid 65534, not by the daemon's uid 0 or root`));
  }
});

test('a reload to a crashing or hanging plugin keeps the old set, the daemon alive and the loop running', async () => {
  const good = instances(`    e:
      plugin: echo
      options: {topic: t}
`);
  const d = await startDaemon({ yaml: good });
  try {
    const stats = async () => (await fetchJson(`${d.url}/api/stats`)).body;
    const waitFailures = async (want) => {
      const deadline = Date.now() + 10000 * timeoutScale;
      for (;;) {
        const s = await stats();
        if (s.reload.failures >= want) return s;
        if (Date.now() > deadline) throw new Error(`reload.failures stayed ${s.reload.failures}`);
        await new Promise((res) => setTimeout(res, 20));
      }
    };
    const before = await stats();
    assert.equal(before.reload.failures, 0);

    await d.writeConfig(instances(`    e:
      plugin: echo
      options: {topic: t}
    boom:
      plugin: crash_in_init
`));
    d.signal('SIGHUP');
    let s = await waitFailures(1);
    assert.match(s.reload.last_error, /instance 'boom': plugin 'crash_in_init' \(.*crash_in_init\.so\) crashed in init: SIGSEGV/);
    assert.deepEqual(s.plugins.map((p) => p.name), ['e'], 'old set kept');
    const m = await (await fetch(`${d.url}/metrics`)).text();
    assert.match(m, /^sophia_reload_failures_total 1$/m);

    // A hang: the child is killed after init_timeout while the loop keeps
    // answering (the probe is asynchronous).
    await d.writeConfig(instances(`    e:
      plugin: echo
      options: {topic: t}
    stuck:
      plugin: hang_in_init
`, '\n  init_timeout: 1'));
    d.signal('SIGHUP');
    // Answers that came while the probe still waited on the hung child
    // (the failure not counted yet): a loop blocked by the probe would give
    // its first answer only after init_timeout, with the failure counted.
    let during = 0;
    for (;;) {
      const h = await fetch(`${d.url}/healthz`);
      assert.equal(h.status, 200);
      await h.arrayBuffer();
      if ((await stats()).reload.failures >= 2) break;
      during++;
    }
    assert.ok(during >= 2, `only ${during} answers while a plugin hung in the reload probe`);
    s = await waitFailures(2);
    assert.match(s.reload.last_error, /instance 'stuck': plugin 'hang_in_init' .*hung in init: no answer within 1 s/);
    assert.deepEqual(s.plugins.map((p) => p.name), ['e']);

    // And a good reload still goes through afterwards.
    await d.writeConfig(instances(`    e:
      plugin: echo
      options: {topic: t2}
`));
    d.signal('SIGHUP');
    const deadline = Date.now() + 10000 * timeoutScale;
    while ((s = await stats()).reload.reloads < before.reload.reloads + 1) {
      if (Date.now() > deadline) throw new Error('good reload did not apply');
      await new Promise((res) => setTimeout(res, 20));
    }
    assert.equal(s.reload.failures, 2);
    assert.equal(s.plugins[0].reload_count, 1);
  } finally {
    assert.deepEqual(await d.stop(), { code: 0, signal: null, killed: false });
  }
});
