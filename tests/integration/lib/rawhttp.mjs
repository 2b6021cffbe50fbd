// Raw HTTP/1.1 over one TCP connection, for the request shapes fetch()
// cannot send (pipelining, duplicate lengths, half-close, bodies on GET)
// and for counting answers exactly: a shape must get one answer, never
// zero, two or a truncated one.
import net from 'node:net';
import { timeoutScale } from './daemon.mjs';

/**
 * Parses every complete response in `buf` (a Buffer). HEAD answers carry
 * a content-length but no body: `heads` lists, in order, which requests
 * were HEAD. Returns {responses, rest} where each response is
 * {status, headers (lower-case names), body (string)}.
 */
export function parseResponses(buf, heads = []) {
  const responses = [];
  let at = 0;
  for (;;) {
    const end = buf.indexOf('\r\n\r\n', at);
    if (end < 0) break;
    const head = buf.subarray(at, end).toString('latin1').split('\r\n');
    const m = /^HTTP\/1\.1 (\d{3}) /.exec(head[0]);
    if (!m) throw new Error(`not a status line: ${JSON.stringify(head[0])}`);
    const headers = {};
    for (const line of head.slice(1)) {
      const i = line.indexOf(':');
      headers[line.slice(0, i).toLowerCase()] = line.slice(i + 1).trim();
    }
    const status = Number(m[1]);
    if (status === 100) { at = end + 4; continue; }
    const isHead = heads[responses.length] === true;
    const len = isHead ? 0 : Number(headers['content-length'] ?? 0);
    if (buf.length < end + 4 + len) break;
    responses.push({ status, headers, body: buf.subarray(end + 4, end + 4 + len).toString() });
    at = end + 4 + len;
  }
  return { responses, rest: buf.subarray(at) };
}

/**
 * Sends `chunks` (strings or Buffers, written one after the other with
 * `gapMs` between them) and collects the answers until `want` responses
 * arrived and then `settleMs` passed quietly, or the server closed, or
 * `timeoutMs` ran out. halfClose: shut our write side after the last chunk.
 * Resolves to {responses, closed, raw, interim}.
 */
export function exchange(port, chunks, opts = {}) {
  const {
    want = 1, heads = [], halfClose = false, gapMs = 0, settleMs = 150,
    timeoutMs = 5000 * timeoutScale, host = '127.0.0.1',
  } = opts;
  return new Promise((resolve, reject) => {
    const s = net.connect(port, host);
    let buf = Buffer.alloc(0);
    let closed = false;
    let done = false;
    let settle;
    const finish = () => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      clearTimeout(settle);
      s.destroy();
      const { responses } = parseResponses(buf, heads);
      resolve({ responses, closed, raw: buf.toString('latin1'), interim: buf.includes('HTTP/1.1 100 Continue') });
    };
    const timer = setTimeout(finish, timeoutMs);
    s.on('data', (d) => {
      buf = Buffer.concat([buf, d]);
      try {
        if (parseResponses(buf, heads).responses.length >= want) {
          clearTimeout(settle);
          settle = setTimeout(finish, settleMs);
        }
      } catch (e) {
        done = true;
        s.destroy();
        reject(e);
      }
    });
    s.on('end', () => { closed = true; finish(); });
    s.on('close', () => { closed = true; finish(); });
    s.on('error', (e) => { if (e.code === 'ECONNRESET' || e.code === 'EPIPE') { closed = true; finish(); } else if (!done) reject(e); });
    s.on('connect', async () => {
      for (const c of chunks) {
        if (done) return;
        s.write(c);
        if (gapMs) await new Promise((r) => setTimeout(r, gapMs));
      }
      if (halfClose) s.end();
    });
  });
}

/** One request as text: method, path, headers object, body. */
export function request(method, path, headers = {}, body = '') {
  const h = { host: '127.0.0.1', ...headers };
  let s = `${method} ${path} HTTP/1.1\r\n`;
  for (const [k, v] of Object.entries(h)) {
    for (const one of Array.isArray(v) ? v : [v]) s += `${k}: ${one}\r\n`;
  }
  return `${s}\r\n${body}`;
}
