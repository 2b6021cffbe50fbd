// timeline - reads `perf script -F pid,time,event,trace` of a server's
// syscall tracepoints (timeline.sh) and prints where each POST's time
// went, from the POST's read to its WebSocket send, as medians and p90s
// over the POSTs.
//   node timeline.mjs --roles PID >ROLES    (while the server runs)
//   node timeline.mjs PID HTTP_PORT REDIS_PORT ROLES <trace.txt
// ROLES: lines "fd peer_port local_port" of the server's TCP sockets, from
// /proc: how an fd is told apart (Redis, or a client of the server).
//
// A POST, in the server's syscalls:
//   t0 the POST read                  (readv / recvfrom on the client fd)
//   t1 the first write to Redis       (the append)
//   t2 the first read from Redis      (woken by the append's answer)
//   t3 the last write to Redis before t4 (the end of processing: the
//      write-back journal's XADD, the blocked read re-armed)
//   t4 the last read from Redis before t5 (woken by the journal's answer)
//   t5 the first send to the WebSocket client
// The durable floor has no t3/t4 (it publishes on the append's answer):
// its time after t2 is all in the last stage.
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

if (process.argv[2] === '--roles') {
  const dir = `/proc/${process.argv[3]}/fd`;
  const fdOf = new Map();
  for (const fd of readdirSync(dir)) {
    try {
      const m = readlinkSync(`${dir}/${fd}`).match(/^socket:\[(\d+)\]$/);
      if (m) fdOf.set(m[1], fd);
    } catch { /* closed meanwhile */ }
  }
  const port = (addr) => parseInt(addr.split(':')[1], 16);
  for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (fdOf.has(f[9])) console.log(`${fdOf.get(f[9])} ${port(f[2])} ${port(f[1])}`);
  }
  process.exit(0);
}

const [pid, httpPort, redisPort, rolesFile] = process.argv.slice(2);
const role = new Map(); // fd -> 'redis' | 'client' (POSTs or WebSocket)
for (const line of readFileSync(rolesFile, 'utf8').split('\n')) {
  const [fd, peer, local] = line.split(' ').map(Number);
  if (!line) continue;
  if (peer === Number(redisPort)) role.set(fd, 'redis');
  else if (local === Number(httpPort)) role.set(fd, 'client');
}

const posts = [];
let cur = null;
for (const line of readFileSync(0, 'utf8').split('\n')) {
  const m = line.match(/^\s*(\d+)\s+([\d.]+):\s+syscalls:sys_enter_(\w+):.*?fd: (0x[0-9a-f]+)/);
  if (!m || m[1] !== pid) continue;
  const [t, call, fd] = [Number(m[2]) * 1e6, m[3], parseInt(m[4], 16)];
  const r = role.get(fd);
  const read = /^(read|readv|recvfrom|recvmsg)$/.test(call);
  if (r === 'client' && read) {
    if (cur && cur.t5 === undefined) posts.pop(); // never sent: not counted
    cur = { fd, t0: t, lastW: null, lastR: null };
    posts.push(cur);
    continue;
  }
  if (!cur || cur.t5 !== undefined) continue;
  if (r === 'redis' && !read) {
    cur.t1 ??= t;
    if (cur.t2 !== undefined) cur.lastW = t;
  } else if (r === 'redis' && read) {
    if (cur.t1 !== undefined) cur.t2 ??= t;
    if (cur.lastW !== null) cur.lastR = t;
  } else if (r === 'client' && !read && fd !== cur.fd) { // not the 202
    cur.t5 = t;
    cur.t3 = cur.lastW ?? cur.t2;
    cur.t4 = cur.lastR ?? cur.t2;
  }
}
const done = posts.filter((p) => p.t5 !== undefined && p.t1 !== undefined && p.t2 !== undefined);
if (done.length === 0) {
  console.error('timeline: no complete POST in the trace');
  process.exit(1);
}
const stat = (f) => {
  const v = done.map(f).sort((a, b) => a - b);
  return [v[Math.floor((v.length - 1) / 2)], v[Math.floor((v.length - 1) * 0.9)]];
};
const rows = [
  ['read -> append sent (parse)', (p) => p.t1 - p.t0],
  ['append round trip', (p) => p.t2 - p.t1],
  ['processing, to its last write', (p) => p.t3 - p.t2],
  ['journal round trip', (p) => p.t4 - p.t3],
  ['commit and publish, to the send', (p) => p.t5 - p.t4],
  ['POST read -> WebSocket send', (p) => p.t5 - p.t0],
];
console.log(`${done.length} POSTs: median / p90, µs`);
for (const [label, f] of rows) {
  const [p50, p90] = stat(f);
  console.log(`  ${label.padEnd(34)} ${p50.toFixed(0).padStart(6)} ${p90.toFixed(0).padStart(6)}`);
}
