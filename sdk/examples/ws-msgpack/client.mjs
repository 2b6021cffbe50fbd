#!/usr/bin/env node
// A Sophia /ws client speaking the binary subprotocol sophia.v1.msgpack
// (SPEC §5, README "WebSocket encodings"): the same messages as the JSON
// ones, as msgpack binary frames both ways.
//
//   npm install
//   SOPHIA_TOKEN=<jwt> node client.mjs ws://127.0.0.1:8080/ws 'dashboard:*' alerts
//
// It authenticates with an `auth` message when SOPHIA_TOKEN is set,
// subscribes, resumes after a reconnect with `since` (the last seq seen
// per topic), asks each exact topic's `history` once, and prints every
// message it gets as one JSON line.
import WebSocket from 'ws';
import { encode, decode } from '@msgpack/msgpack';

const [url = 'ws://127.0.0.1:8080/ws', ...topics] = process.argv.slice(2);
const token = process.env.SOPHIA_TOKEN;
const lastSeq = {}; // topic -> seq, for `since` after a reconnect

function connect() {
  const ws = new WebSocket(url, ['sophia.v1.msgpack']);
  const send = (msg) => ws.send(encode(msg));
  ws.on('open', () => {
    // The server echoes the subprotocol it chose; without it, JSON.
    console.log(JSON.stringify({ connected: url, protocol: ws.protocol }));
    if (token) send({ type: 'auth', token });
    const since = Object.keys(lastSeq).length ? { since: lastSeq } : {};
    send({ type: 'subscribe', subscriptions: topics, ...since });
    topics.filter((t) => !t.endsWith('*')).forEach((topic, i) =>
      send({ type: 'request', id: `h${i}`, method: 'history', params: { topic, limit: 10 } }));
  });
  ws.on('message', (data, isBinary) => {
    // Seqs are below 2^53 (a freed topic restarts near the clock in
    // microseconds), so plain numbers hold them.
    const msg = isBinary ? decode(data) : JSON.parse(data);
    if (msg.topic && msg.seq) lastSeq[msg.topic] = msg.seq;
    console.log(JSON.stringify(msg));
  });
  ws.on('close', (code, reason) => {
    console.log(JSON.stringify({ closed: code, reason: reason.toString() }));
    if (code === 4001 || code === 1008) process.exit(1); // auth or policy: retrying will not help
    setTimeout(connect, 1000);
  });
  ws.on('error', (err) => console.error(`ws: ${err.message}`));
}

connect();
