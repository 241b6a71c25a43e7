// Baseline 3: Node.js with the `ws` package, the minimal chat protocol, no persistence.
//
// Fan-out as the ws README does it: encode the event once, `client.send(data)` to each member.
// permessage-deflate is off (the ws default for servers) unless --deflate: then it is offered
// with server_no_context_takeover and threshold 0 (every message compressed, however small),
// as chatd's `[limits] compression = yes` compresses each message on its own; ws compresses
// in each `send()`, so once per member, on libuv's thread pool.
//
//     node node_ws.js [--port 0] [--tls CERT KEY] [--ping SECONDS] [--deflate]
//
// No keepalive unless --ping: then the heartbeat of the ws README ("How to detect and close
// broken connections?"): one setInterval over wss.clients every SECONDS that terminates a
// client whose pong to the previous ping has not come, else clears its isAlive and pings it;
// a pong sets isAlive again (bench scenario k).
//
// Prints `READY <port>` once listening; SIGTERM or SIGINT stops it.
'use strict';

const fs = require('fs');
const http = require('http');
const https = require('https');
const { WebSocketServer } = require('ws');

const EPOCH = 'bench';
const args = process.argv.slice(2);
let port = 0;
let tls = null;
let pingSeconds = 0;
let deflate = false;
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--port') port = Number(args[++i]);
  else if (args[i] === '--tls') tls = { cert: fs.readFileSync(args[++i]), key: fs.readFileSync(args[++i]) };
  else if (args[i] === '--ping') pingSeconds = Number(args[++i]);
  else if (args[i] === '--deflate') deflate = true;
  else throw new Error(`unknown argument ${args[i]}`);
}

const rooms = new Map(); // name -> {name, seq, members: Set}
const server = tls ? https.createServer(tls) : http.createServer();
const perMessageDeflate = deflate && { threshold: 0, serverNoContextTakeover: true };
const wss = new WebSocketServer({ server, perMessageDeflate });

function heartbeat() {
  this.isAlive = true;
}

wss.on('connection', (ws) => {
  if (pingSeconds > 0) {
    ws.isAlive = true;
    ws.on('pong', heartbeat);
  }
  let user = null;
  const joined = [];
  ws.on('message', (data, isBinary) => {
    if (isBinary) return;
    const frame = JSON.parse(data);
    if (frame.type === 'hello') {
      user = frame.name;
      ws.send(JSON.stringify({ type: 'welcome', user, max_text_chars: 4000 }));
    } else if (frame.type === 'join') {
      let room = rooms.get(frame.room);
      if (!room) {
        room = { name: frame.room, seq: 0, members: new Set() };
        rooms.set(frame.room, room);
      }
      room.members.add(ws);
      joined.push(room);
      ws.send(JSON.stringify({ type: 'joined', room: room.name, epoch: EPOCH, seq: room.seq }));
    } else if (frame.type === 'say') {
      const room = rooms.get(frame.room);
      room.seq += 1;
      const event = Buffer.from(JSON.stringify({
        type: 'message', room: room.name, epoch: EPOCH, seq: room.seq,
        ts: new Date().toISOString(), from: user, id: frame.id, text: frame.text,
      }));
      for (const member of room.members) {
        if (member.readyState === 1) member.send(event, { binary: false });
      }
      ws.send(JSON.stringify({ type: 'ack', id: frame.id, seq: room.seq }));
    }
  });
  ws.on('close', () => {
    for (const room of joined) room.members.delete(ws);
  });
});

if (pingSeconds > 0) {
  const interval = setInterval(function ping() {
    wss.clients.forEach(function each(ws) {
      if (ws.isAlive === false) return ws.terminate();

      ws.isAlive = false;
      ws.ping();
    });
  }, pingSeconds * 1000);

  wss.on('close', function close() {
    clearInterval(interval);
  });
}

server.listen(port, '127.0.0.1', () => {
  console.log(`READY ${server.address().port}`);
});
for (const signal of ['SIGTERM', 'SIGINT']) process.on(signal, () => process.exit(0));
