// The Redis and PostgreSQL servers that scripts/servers.sh started, seen
// from a test: look inside them, and stop and restart them to check that
// sophiad degrades and recovers.
//
// No npm client libraries: Redis is spoken to over a raw socket in RESP
// (a dozen lines, and it is what we need to see exactly what sophiad
// wrote), PostgreSQL through the psql binary that ships with the server.
// Stopping and starting need what servers.sh exports (SOPHIA_REDIS_CONF,
// SOPHIA_PG_BIN, SOPHIA_PG_DATA, SOPHIA_PG_RUNAS); against servers of your
// own they throw. A test that uses them stops a server every other test
// shares, so its file must carry the line `// sophia-test: run-serial`.

import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** {host, port, db} of a redis:// URL (default: SOPHIA_REDIS_URL). */
export function redisAddress(url = process.env.SOPHIA_REDIS_URL) {
  if (!url) throw new Error('SOPHIA_REDIS_URL is not set');
  const u = new URL(url);
  return {
    host: u.hostname || '127.0.0.1',
    port: Number(u.port || 6379),
    db: Number(u.pathname.slice(1) || 0),
  };
}

/** {host, port, database} of a postgresql:// URL (default: SOPHIA_PG_URL). */
export function pgAddress(url = process.env.SOPHIA_PG_URL) {
  if (!url) throw new Error('SOPHIA_PG_URL is not set');
  const u = new URL(url);
  return {
    host: u.hostname || '127.0.0.1',
    port: Number(u.port || 5432),
    database: decodeURIComponent(u.pathname.slice(1)) || 'postgres',
  };
}

/** Resolves true if host:port accepts a TCP connection within timeoutMs. */
export function tcpProbe(host, port, timeoutMs = 2000) {
  return new Promise((resolve) => {
    const sock = net.connect({ host, port });
    const done = (ok) => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(timeoutMs, () => done(false));
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

function encodeCommand(args) {
  const parts = [`*${args.length}\r\n`];
  for (const a of args) {
    const s = String(a);
    parts.push(`$${Buffer.byteLength(s)}\r\n${s}\r\n`);
  }
  return parts.join('');
}

// Parses one RESP2 reply at buf[pos]; returns [value, nextPos] or null when
// the buffer does not hold a whole reply yet.
function parseReply(buf, pos = 0) {
  const eol = buf.indexOf('\r\n', pos);
  if (eol < 0) return null;
  const kind = String.fromCharCode(buf[pos]);
  const line = buf.toString('utf8', pos + 1, eol);
  const next = eol + 2;
  switch (kind) {
    case '+':
      return [line, next];
    case '-': {
      const err = new Error(line);
      err.redisError = true;
      return [err, next];
    }
    case ':':
      return [Number(line), next];
    case '$': {
      const n = Number(line);
      if (n < 0) return [null, next];
      if (buf.length < next + n + 2) return null;
      return [buf.toString('utf8', next, next + n), next + n + 2];
    }
    case '*': {
      const n = Number(line);
      if (n < 0) return [null, next];
      const items = [];
      let p = next;
      for (let i = 0; i < n; i++) {
        const r = parseReply(buf, p);
        if (!r) return null;
        items.push(r[0]);
        p = r[1];
      }
      return [items, p];
    }
    default:
      throw new Error(`unexpected RESP reply: ${buf.toString('utf8', pos, Math.min(buf.length, pos + 80))}`);
  }
}

/**
 * Sends one command (an array of strings/numbers) on a fresh connection,
 * after SELECT of the URL's database, and resolves to the reply: a string,
 * number, null, or array of those. A Redis error reply rejects (the Error
 * has redisError = true). `SHUTDOWN` resolves to null when the server
 * closes the connection without answering.
 */
export function redisCommand(args, { url = process.env.SOPHIA_REDIS_URL, timeoutMs = 5000 } = {}) {
  const { host, port, db } = redisAddress(url);
  const cmds = db ? [['SELECT', db], args] : [args];
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host, port });
    let buf = Buffer.alloc(0);
    const replies = [];
    const finish = (fn, v) => {
      sock.destroy();
      fn(v);
    };
    sock.setTimeout(timeoutMs, () => finish(reject, new Error(`redis ${host}:${port} timed out on ${args[0]}`)));
    sock.once('error', (err) => finish(reject, err));
    sock.once('connect', () => sock.write(cmds.map(encodeCommand).join('')));
    sock.on('data', (chunk) => {
      buf = Buffer.concat([buf, chunk]);
      let r;
      while (replies.length < cmds.length && (r = parseReply(buf))) {
        replies.push(r[0]);
        buf = buf.subarray(r[1]);
      }
      if (replies.length < cmds.length) return;
      const last = replies[replies.length - 1];
      finish(last instanceof Error ? reject : resolve, last);
    });
    sock.once('end', () => {
      if (String(args[0]).toUpperCase() === 'SHUTDOWN') finish(resolve, null);
      else finish(reject, new Error(`redis ${host}:${port} closed the connection on ${args[0]}`));
    });
  });
}

function psqlPath() {
  const bin = process.env.SOPHIA_PG_BIN;
  if (bin && existsSync(path.join(bin, 'psql'))) return path.join(bin, 'psql');
  return 'psql';
}

/**
 * Runs SQL through psql against url (default SOPHIA_PG_URL) and resolves to
 * the rows of the last statement, each an array of column strings (NULL is
 * ''). Fails on the first SQL error.
 */
export async function pgQuery(sql, { url = process.env.SOPHIA_PG_URL } = {}) {
  if (!url) throw new Error('SOPHIA_PG_URL is not set');
  const { stdout } = await run(
    psqlPath(),
    ['-X', '-q', '-A', '-t', '-F', '\t', '-v', 'ON_ERROR_STOP=1', '-d', url, '-c', sql],
    { timeout: 30000 },
  );
  return stdout
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => l.split('\t'));
}

/**
 * Creates an empty database on the shared PostgreSQL server and resolves to
 * its URL, for a test that needs tables nobody else writes to.
 */
export async function createDatabase(prefix = 'test') {
  const name = `${prefix}_${process.pid}_${Math.random().toString(36).slice(2, 8)}`.toLowerCase();
  if (!/^[a-z_][a-z0-9_]*$/.test(name)) throw new Error(`bad database name ${name}`);
  await pgQuery(`CREATE DATABASE ${name}`);
  const u = new URL(process.env.SOPHIA_PG_URL);
  u.pathname = `/${name}`;
  return u.toString();
}

/** Drops a database made by createDatabase(), ending its connections. */
export async function dropDatabase(url) {
  const { database } = pgAddress(url);
  if (!/^[a-z_][a-z0-9_]*$/.test(database)) throw new Error(`bad database name ${database}`);
  await pgQuery(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
}

async function waitFor(what, check, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await sleep(50);
  }
  throw new Error(`${what} within ${timeoutMs} ms`);
}

function requireEnv(...names) {
  for (const n of names) {
    if (!process.env[n]) {
      throw new Error(`${n} is not set: only servers started by scripts/servers.sh can be stopped and started`);
    }
  }
}

/** Stops the shared Redis (SHUTDOWN NOSAVE) and waits until its port is closed. */
export async function stopRedis() {
  requireEnv('SOPHIA_REDIS_CONF');
  const { host, port } = redisAddress();
  await redisCommand(['SHUTDOWN', 'NOSAVE']).catch(() => {});
  await waitFor('redis still accepts connections', async () => !(await tcpProbe(host, port)), 10000);
}

/** Starts the shared Redis again from its config file and waits for PONG. */
export async function startRedis() {
  requireEnv('SOPHIA_REDIS_CONF');
  await run('redis-server', [process.env.SOPHIA_REDIS_CONF]);
  await waitFor(
    'redis did not answer PING',
    () => redisCommand(['PING']).then((r) => r === 'PONG', () => false),
    15000,
  );
}

function pgCtl(args) {
  requireEnv('SOPHIA_PG_BIN', 'SOPHIA_PG_DATA');
  const cmd = [path.join(process.env.SOPHIA_PG_BIN, 'pg_ctl'), '-D', process.env.SOPHIA_PG_DATA, ...args];
  const runas = process.env.SOPHIA_PG_RUNAS;
  return runas ? run('runuser', ['-u', runas, '--', ...cmd]) : run(cmd[0], cmd.slice(1));
}

/** Stops the shared PostgreSQL (mode: 'fast' ends sessions, 'immediate' crashes it). */
export async function stopPostgres(mode = 'fast') {
  await pgCtl(['-m', mode, '-w', '-t', '30', 'stop']);
}

/** Starts the shared PostgreSQL again on its port and waits until it takes queries. */
export async function startPostgres() {
  requireEnv('SOPHIA_PG_LOG');
  await pgCtl(['-l', process.env.SOPHIA_PG_LOG, '-w', '-t', '60', 'start']);
  await waitFor(
    'postgresql did not answer SELECT 1',
    () => pgQuery('SELECT 1').then((rows) => rows[0]?.[0] === '1', () => false),
    15000,
  );
}
