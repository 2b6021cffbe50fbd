// Test-side control of a real sophiad: start one on a free port with a
// given configuration, talk to it over HTTP and WebSocket, stop it.
//
// Why it looks like this:
// - Every daemon gets its own temp directory (config, faiss index, anything
//   relative) and its own port, so tests never see each other's state on
//   disk or on the network. The shared Redis/PostgreSQL come from the
//   environment (SOPHIA_REDIS_URL / SOPHIA_PG_URL, which sophiad reads as
//   overrides); pass `env: {SOPHIA_REDIS_URL: ''}` to run without a tier.
// - "Ready" means /healthz answers at all, even 503: a test about a missing
//   tier must be able to start a degraded daemon.
// - The daemon's stderr is kept, not printed, and shown when it matters:
//   a test that failed (root afterEach hook), a daemon that died on its own,
//   a start that failed, or always with SOPHIA_TEST_VERBOSE=1.
// - A sanitizer report in the daemon's stderr makes stop() reject, so an
//   ASan/UBSan finding fails the test that caused it even if the test only
//   looked at HTTP answers.
// - Daemons a test forgot to stop are killed when the test file ends, so a
//   forgotten one cannot hang ctest until its timeout.
// - WebSocket messages are queued per socket from the moment it is created,
//   so a message that arrives before the test asks for it is not lost.

import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, afterEach, beforeEach } from 'node:test';
import WebSocket from 'ws';

// Multiplies every default timeout: sanitizer builds run several times
// slower. scripts/test --sanitize sets ASAN_OPTIONS, which is the hint.
export const timeoutScale =
  Number(process.env.SOPHIA_TEST_TIMEOUT_SCALE) || (process.env.ASAN_OPTIONS ? 3 : 1);

const verbose = Boolean(process.env.SOPHIA_TEST_VERBOSE);
const SANITIZER_RE = /ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|SUMMARY: UndefinedBehaviorSanitizer/;

const allDaemons = []; // every daemon this test file started
const running = new Set(); // daemons not yet exited
let touched = new Set(); // daemons alive at some point during the current test

beforeEach(() => {
  touched = new Set(running);
});

let knowsPassed = false; // t.passed exists from Node 20.x on

afterEach((t) => {
  if (typeof t.passed === 'boolean') knowsPassed = true;
  if (t.passed === false) for (const d of touched) d._dump(`test "${t.name}" failed`);
});

// Kills what is still running, and fails the file on a sanitizer report
// that no stop() has reported (a daemon never stopped, or one that crashed).
after(async () => {
  await Promise.all([...running].map((d) => d._kill()));
  if (process.exitCode && !knowsPassed) for (const d of allDaemons) d._dump('test file failed');
  const unreported = allDaemons.filter((d) => !d._reported && d._sanitizerReport() !== undefined);
  for (const d of unreported) d._dump('sanitizer report');
  if (unreported.length) {
    throw new Error(`sanitizer report in sophiad's stderr: ${unreported[0]._sanitizerReport()}`);
  }
});

/** Resolves to a TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Replaces @PLUGIN_DIR@ (bundled plugins), @TEST_PLUGIN_DIR@ (test plugins),
 * @SOURCE_DIR@ (repository root) and @TMP_DIR@ (this daemon's directory) in
 * a YAML text; throws on any other @WORD@ left, which is a typo.
 */
export function substitute(yaml, tmpDir) {
  const vars = {
    PLUGIN_DIR: process.env.SOPHIA_PLUGIN_DIR,
    TEST_PLUGIN_DIR: process.env.SOPHIA_TEST_PLUGIN_DIR,
    SOURCE_DIR: process.env.SOPHIA_SOURCE_DIR,
    TMP_DIR: tmpDir,
  };
  return yaml.replace(/@([A-Z_]+)@/g, (whole, name) => {
    if (!(name in vars)) throw new Error(`unknown placeholder ${whole} in test YAML`);
    if (!vars[name]) throw new Error(`${whole} used but its environment variable is not set (run through ctest)`);
    return vars[name];
  });
}

function sophiadPath(bin) {
  const p = bin ?? process.env.SOPHIAD;
  if (!p) throw new Error('SOPHIAD is not set: run the integration tests through ctest (scripts/test)');
  return p;
}

/**
 * Starts sophiad and resolves once GET /healthz answers with any status.
 *
 * options:
 *   yaml    configuration text (placeholders as in substitute()); written to
 *           <tmp>/sophia.yaml. Left out: `config`, else the repository's
 *           config/sophia.yaml.
 *   config  a configuration file used where it is (e.g. an installed one)
 *   env     variables laid over process.env (a value of undefined removes one)
 *   args    more sophiad arguments, after `-c FILE --listen 127.0.0.1:PORT`
 *   readyTimeoutMs  default 15 s (times timeoutScale)
 *   bin     executable to run instead of $SOPHIAD (the harness's own tests)
 *   port    listen on this port instead of a free one (e.g. a restart on
 *           the port a client already knows: startDaemon({..., port: d.port}))
 *
 * Rejects, with the captured stderr in the message, if the process exits or
 * the timeout passes first. Resolves to a handle:
 *   port, url ('http://127.0.0.1:PORT'), wsUrl ('ws://127.0.0.1:PORT/ws'),
 *   dir (its temp directory), configPath, proc (the ChildProcess),
 *   stderr() / stdout(): everything captured so far, as one string,
 *   stderrLines: the captured lines (live array),
 *   waitForStderr(re, timeoutMs?, fromLine?): resolves to the first line
 *     matching re at index >= fromLine (use stderrLines.length as a mark),
 *   writeConfig(yaml): rewrites configPath (for SIGHUP reload tests),
 *   signal(name): sends a signal, e.g. 'SIGHUP',
 *   exited: Promise<{code, signal}> settled when the process is gone,
 *   stop(signal = 'SIGTERM', timeoutMs = 10 s times timeoutScale): sends
 *     the signal, waits up to timeoutMs, then SIGKILL; resolves to
 *     {code, signal, killed} (killed: the fallback was needed); rejects if
 *     stderr holds a sanitizer report.
 */
export async function startDaemon(options = {}) {
  const { yaml, config, env = {}, args = [], bin } = options;
  const readyTimeoutMs = options.readyTimeoutMs ?? 15000 * timeoutScale;
  const exe = sophiadPath(bin);
  const base = process.env.SOPHIA_TEST_TMP || os.tmpdir();
  const dir = await mkdtemp(path.join(base, 'sophiad-'));
  let configPath;
  if (yaml === undefined && config !== undefined) {
    configPath = config;
  } else if (yaml === undefined) {
    if (!process.env.SOPHIA_SOURCE_DIR) throw new Error('SOPHIA_SOURCE_DIR is not set');
    configPath = path.join(process.env.SOPHIA_SOURCE_DIR, 'config', 'sophia.yaml');
  } else {
    configPath = path.join(dir, 'sophia.yaml');
    await writeFile(configPath, substitute(yaml, dir));
  }
  const port = options.port ?? (await freePort());
  const fullEnv = { ...process.env, ...env };
  for (const [k, v] of Object.entries(env)) if (v === undefined) delete fullEnv[k];

  const proc = spawn(exe, ['-c', configPath, '--listen', `127.0.0.1:${port}`, ...args], {
    cwd: dir,
    env: fullEnv,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const d = new Daemon({ proc, port, dir, configPath });
  allDaemons.push(d);
  running.add(d);
  touched.add(d);

  // A failed start is reported by the rejection, which carries the stderr.
  d._stopping = true;
  try {
    await d._waitReady(readyTimeoutMs);
  } catch (err) {
    await d._kill();
    d._dumped = d.stderrLines.length;
    throw err;
  }
  d._stopping = false;
  return d;
}

class Daemon {
  constructor({ proc, port, dir, configPath }) {
    this.proc = proc;
    this.port = port;
    this.dir = dir;
    this.configPath = configPath;
    this.url = `http://127.0.0.1:${port}`;
    this.wsUrl = `ws://127.0.0.1:${port}/ws`;
    this.stderrLines = [];
    this.stdoutLines = [];
    this._dumped = 0;
    this._reported = false;
    this._stopping = false;
    this._lineWaiters = new Set();
    this._status = null;
    this._spawnError = null;
    collectLines(proc.stderr, (line) => this._onStderr(line));
    collectLines(proc.stdout, (line) => this.stdoutLines.push(line));
    this.exited = new Promise((resolve) => {
      proc.on('error', (err) => {
        // spawn failed (e.g. ENOENT): there will be no 'close' with a status.
        this._spawnError = err;
        this._status = { code: null, signal: null };
        running.delete(this);
        resolve(this._status);
      });
      proc.on('close', (code, signal) => {
        this._status = { code, signal };
        running.delete(this);
        if (!this._stopping) this._dump(`sophiad exited by itself (code ${code}, signal ${signal})`);
        for (const w of this._lineWaiters) w.onExit();
        resolve(this._status);
      });
    });
  }

  stderr() {
    return this.stderrLines.join('\n');
  }

  stdout() {
    return this.stdoutLines.join('\n');
  }

  signal(name) {
    this.proc.kill(name);
  }

  async writeConfig(yaml) {
    await writeFile(this.configPath, substitute(yaml, this.dir));
  }

  async readConfig() {
    return readFile(this.configPath, 'utf8');
  }

  waitForStderr(re, timeoutMs = 10000 * timeoutScale, fromLine = 0) {
    const found = this.stderrLines.slice(fromLine).find((l) => re.test(l));
    if (found !== undefined) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const w = {
        onLine: (line) => {
          if (!re.test(line)) return;
          done();
          resolve(line);
        },
        onExit: () => {
          done();
          reject(new Error(`sophiad exited while waiting for ${re} in its stderr:\n${this.stderr()}`));
        },
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`no stderr line matched ${re} within ${timeoutMs} ms:\n${this.stderr()}`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        this._lineWaiters.delete(w);
      };
      if (this._status) return w.onExit();
      this._lineWaiters.add(w);
    });
  }

  async stop(signal = 'SIGTERM', timeoutMs = 10000 * timeoutScale) {
    const status = await this._kill(signal, timeoutMs);
    const report = this._sanitizerReport();
    if (report !== undefined) {
      this._reported = true;
      this._dump('sanitizer report');
      throw new Error(`sanitizer report in sophiad's stderr: ${report}`);
    }
    if (!status.killed) await rm(this.dir, { recursive: true, force: true });
    return status;
  }

  async _kill(signal = 'SIGTERM', timeoutMs = 10000 * timeoutScale) {
    if (this._status) return { ...this._status, killed: false };
    this._stopping = true;
    let killed = false;
    this.proc.kill(signal);
    const timer = setTimeout(() => {
      killed = true;
      this.proc.kill('SIGKILL');
    }, timeoutMs);
    const status = await this.exited;
    clearTimeout(timer);
    if (killed) this._dump(`sophiad ignored ${signal} for ${timeoutMs} ms and was killed`);
    return { ...status, killed };
  }

  _sanitizerReport() {
    return this.stderrLines.find((l) => SANITIZER_RE.test(l));
  }

  _onStderr(line) {
    this.stderrLines.push(line);
    if (verbose) process.stderr.write(`[sophiad :${this.port}] ${line}\n`);
    for (const w of this._lineWaiters) w.onLine(line);
  }

  // Prints what has not been printed yet; with SOPHIA_TEST_VERBOSE it
  // already was, line by line.
  _dump(why) {
    if (verbose || this._dumped >= this.stderrLines.length) return;
    const lines = this.stderrLines.slice(this._dumped);
    this._dumped = this.stderrLines.length;
    const shown = lines.length > 400 ? ['...', ...lines.slice(-400)] : lines;
    process.stderr.write(
      `--- sophiad :${this.port} stderr (${why}) ---\n${shown.join('\n')}\n--- end sophiad :${this.port} ---\n`,
    );
  }

  async _waitReady(timeoutMs) {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (this._spawnError) {
        throw new Error(`cannot run ${this.proc.spawnfile}: ${this._spawnError.message}`);
      }
      if (this._status) {
        const { code, signal } = this._status;
        throw new Error(
          `sophiad exited (code ${code}, signal ${signal}) before answering /healthz; stderr:\n${this.stderr()}`,
        );
      }
      try {
        const res = await fetch(`${this.url}/healthz`, { signal: AbortSignal.timeout(1000) });
        await res.arrayBuffer();
        return;
      } catch {
        await sleep(50);
      }
    }
    throw new Error(`sophiad did not answer /healthz within ${timeoutMs} ms; stderr:\n${this.stderr()}`);
  }
}

function collectLines(stream, onLine) {
  let rest = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk) => {
    const parts = (rest + chunk).split('\n');
    rest = parts.pop();
    for (const p of parts) onLine(p);
  });
  stream.on('end', () => {
    if (rest) onLine(rest);
    rest = '';
  });
}

/**
 * Runs sophiad once to completion (e.g. ['--check'] or ['--version']) and
 * resolves to {code, signal, stdout, stderr}. env is laid over process.env;
 * killed with SIGKILL after timeoutMs (default 60 s times timeoutScale).
 * options.bin runs another executable instead of $SOPHIAD; options.onSpawn
 * is handed the child process (to signal it while it runs).
 */
export function runSophiad(args = [], env = {}, options = {}) {
  const exe = sophiadPath(options.bin);
  const timeoutMs = options.timeoutMs ?? 60000 * timeoutScale;
  const fullEnv = { ...process.env, ...env };
  for (const [k, v] of Object.entries(env)) if (v === undefined) delete fullEnv[k];
  return new Promise((resolve, reject) => {
    const proc = spawn(exe, args, {
      cwd: options.cwd,
      env: fullEnv,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    options.onSpawn?.(proc);
    proc.stdout.setEncoding('utf8').on('data', (c) => (stdout += c));
    proc.stderr.setEncoding('utf8').on('data', (c) => (stderr += c));
    const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
    proc.on('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${exe}: ${err.message}`));
    });
    proc.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/**
 * fetch() with JSON on both sides. opts: method, headers, token (sent as
 * `Authorization: Bearer`), body (an object or array is sent as JSON; a
 * string or Buffer as is, all as application/json unless headers say), timeoutMs (default 10 s times timeoutScale).
 * Resolves to {status, headers, text, body}: body is the parsed JSON, or
 * undefined when the answer is not JSON, so a test can assert on it rather
 * than crash; headers is the fetch Headers object (headers.get('x')).
 */
export async function fetchJson(url, opts = {}) {
  const { method, token, body, timeoutMs = 10000 * timeoutScale } = opts;
  const headers = { ...(opts.headers || {}) };
  if (token) headers.authorization = `Bearer ${token}`;
  let payload = body;
  if (body !== undefined && typeof body !== 'string' && !Buffer.isBuffer(body)) {
    payload = JSON.stringify(body);
  }
  // sophiad takes bodies as JSON or NDJSON only (SPEC §12); a test that
  // means another type says so in its headers.
  if (body !== undefined && !Object.keys(headers).some((h) => h.toLowerCase() === 'content-type')) {
    headers['content-type'] = 'application/json';
  }
  const res = await fetch(url, {
    method: method ?? (body === undefined ? 'GET' : 'POST'),
    headers,
    body: payload,
    signal: AbortSignal.timeout(timeoutMs),
  });
  const text = await res.text();
  let parsed;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  return { status: res.status, headers: res.headers, text, body: parsed };
}

const queues = new WeakMap(); // WebSocket -> {messages, waiters, closed}

function queueFor(ws) {
  let q = queues.get(ws);
  if (q) return q;
  q = { messages: [], waiters: new Set(), closed: null };
  queues.set(ws, q);
  ws.on('message', (data, isBinary) => {
    let msg;
    try {
      msg = JSON.parse(isBinary ? data : data.toString('utf8'));
    } catch {
      msg = { type: '__not_json__', raw: data.toString('utf8') };
    }
    for (const w of q.waiters) {
      if (w.predicate(msg)) {
        w.resolve(msg);
        return;
      }
    }
    q.messages.push(msg);
  });
  ws.on('close', (code, reason) => {
    q.closed = { code, reason: reason.toString('utf8') };
    for (const w of [...q.waiters]) w.onClose();
  });
  return q;
}

/**
 * Opens a WebSocket (the `ws` package) and resolves once it is open.
 * opts go to `new WebSocket(url, protocols, opts)`: headers, etc.;
 * opts.protocols, opts.timeoutMs (default 10 s times timeoutScale).
 * Rejects on a failed handshake with err.status set to the HTTP status.
 * Messages are queued from the start for nextMessage().
 */
export function wsConnect(url, opts = {}) {
  const { protocols, timeoutMs = 10000 * timeoutScale, ...wsOpts } = opts;
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, protocols, wsOpts);
    queueFor(ws);
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error(`WebSocket ${url} did not open within ${timeoutMs} ms`));
    }, timeoutMs);
    ws.once('open', () => {
      clearTimeout(timer);
      resolve(ws);
    });
    ws.once('unexpected-response', (req, res) => {
      clearTimeout(timer);
      const err = new Error(`WebSocket ${url} handshake answered HTTP ${res.statusCode}`);
      err.status = res.statusCode;
      req.destroy();
      reject(err);
    });
    ws.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

/** Sends obj as one JSON text frame. */
/**
 * Polls fn() every `every` ms until it returns something truthy, and
 * resolves with that; rejects naming `what` once `ms` have passed.
 */
export async function until(fn, what, ms = 10000 * timeoutScale, every = 50) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(every);
  }
}

export function sendJson(ws, obj) {
  ws.send(JSON.stringify(obj));
}

/**
 * Resolves to the first message (parsed JSON) on ws for which predicate is
 * true, taking it out of the socket's queue; messages that do not match stay
 * queued for later calls. A string predicate matches msg.type. Rejects after
 * timeoutMs (default 5 s times timeoutScale; the message starts with
 * "timeout:") or when the socket closes first, listing what did arrive. A frame that is not JSON arrives as
 * {type: '__not_json__', raw}.
 */
export function nextMessage(ws, predicate = () => true, timeoutMs = 5000 * timeoutScale) {
  const test = typeof predicate === 'string' ? (m) => m && m.type === predicate : predicate;
  const q = queueFor(ws);
  const i = q.messages.findIndex(test);
  if (i >= 0) return Promise.resolve(q.messages.splice(i, 1)[0]);
  const seen = () => JSON.stringify(q.messages).slice(0, 2000);
  return new Promise((resolve, reject) => {
    const w = {
      predicate: test,
      resolve: (msg) => {
        done();
        resolve(msg);
      },
      onClose: () => {
        done();
        reject(new Error(`WebSocket closed (${q.closed.code} ${q.closed.reason}) before a matching message; queued: ${seen()}`));
      },
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`timeout: no matching WebSocket message within ${timeoutMs} ms; queued: ${seen()}`));
    }, timeoutMs);
    const done = () => {
      clearTimeout(timer);
      q.waiters.delete(w);
    };
    if (q.closed) return w.onClose();
    q.waiters.add(w);
  });
}

/** Returns and clears the messages queued on ws that no call has taken. */
export function takeMessages(ws) {
  const q = queueFor(ws);
  return q.messages.splice(0, q.messages.length);
}

/**
 * Resolves to {code, reason} once ws is closed (at once if it already is);
 * rejects after timeoutMs (default 10 s times timeoutScale).
 */
export function wsClosed(ws, timeoutMs = 10000 * timeoutScale) {
  const q = queueFor(ws);
  if (q.closed) return Promise.resolve(q.closed);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`WebSocket still open after ${timeoutMs} ms`)), timeoutMs);
    ws.once('close', () => {
      clearTimeout(timer);
      resolve(q.closed);
    });
  });
}
