// xdsapp is a gRPC application written with gRPC for Node (@grpc/grpc-js + @grpc/grpc-js-xds):
// an xDS client Holdfast's developers did not write. It speaks the same small protocol as
// e2e/cmd/xdsapp (grpc-go) and e2e/clients/python/xdsapp.py (gRPC C-core), so that one e2e
// scenario can drive all three:
//
//   node xdsapp.js --target NAME [--target NAME...] [--interval-ms 25] [--rpc-timeout-ms 1000]
//                  [--idle-timeout-ms N]
//
// The bootstrap comes from GRPC_XDS_BOOTSTRAP. For every target it sends one RPC
// (grpc.testing.TestService/UnaryCall, not wait-for-ready) at a time, every --interval-ms, and
// prints one JSON line per RPC: {"event":"rpc","target":T,"ok":true,"backend":ID} or
// {"event":"rpc","target":T,"ok":false,"code":N,"error":"..."}. Commands on stdin, one per
// line, each acknowledged with {"event":"<command>"}: "pause" stops sending (channels stay open
// and may go idle), "resume" starts again, "close" closes every channel, "open" makes new ones
// and starts sending, "quit" exits 0.
'use strict';

const grpc = require('@grpc/grpc-js');
const xds = require('@grpc/grpc-js-xds');
const readline = require('readline');

xds.register();

function parseArgs(argv) {
  const o = { targets: [], intervalMs: 25, rpcTimeoutMs: 1000, idleTimeoutMs: 0 };
  for (let i = 0; i < argv.length; i++) {
    const v = argv[i + 1];
    switch (argv[i]) {
      case '--target': o.targets.push(v); i++; break;
      case '--interval-ms': o.intervalMs = Number(v); i++; break;
      case '--rpc-timeout-ms': o.rpcTimeoutMs = Number(v); i++; break;
      case '--idle-timeout-ms': o.idleTimeoutMs = Number(v); i++; break;
      default:
        process.stderr.write(`xdsapp: unknown argument ${argv[i]}\n`);
        process.exit(2);
    }
  }
  if (o.targets.length === 0) {
    process.stderr.write('xdsapp: at least one --target is required\n');
    process.exit(2);
  }
  return o;
}

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

// hostnameOf reads SimpleResponse.hostname (field 6, a string) from the serialised response.
function hostnameOf(buf) {
  let i = 0;
  const varint = () => {
    let v = 0, shift = 0, b;
    do {
      if (i >= buf.length) throw new Error('truncated varint');
      b = buf[i++];
      v += (b & 0x7f) * 2 ** shift;
      shift += 7;
    } while (b & 0x80);
    return v;
  };
  let host = '';
  while (i < buf.length) {
    const tag = varint();
    const field = Math.floor(tag / 8), wire = tag & 7;
    if (wire === 0) { varint(); continue; }
    if (wire === 1) { i += 8; continue; }
    if (wire === 5) { i += 4; continue; }
    if (wire !== 2) throw new Error(`wire type ${wire}`);
    const n = varint();
    if (field === 6) host = buf.toString('utf8', i, i + n);
    i += n;
  }
  return host;
}

const opts = parseArgs(process.argv.slice(2));
const method = '/grpc.testing.TestService/UnaryCall';
const ident = (b) => b;
let clients = [];
let sending = false;
let generation = 0; // loops of an earlier generation stop

function openChannels() {
  const chOpts = {};
  if (opts.idleTimeoutMs > 0) chOpts['grpc.client_idle_timeout_ms'] = opts.idleTimeoutMs;
  clients = opts.targets.map((t) => ({ target: t, client: new grpc.Client('xds:///' + t, grpc.credentials.createInsecure(), chOpts) }));
}

function loop(c, gen) {
  if (!sending || gen !== generation) return;
  const deadline = new Date(Date.now() + opts.rpcTimeoutMs);
  c.client.makeUnaryRequest(method, ident, ident, Buffer.alloc(0), new grpc.Metadata(), { deadline }, (err, resp) => {
    if (gen === generation) {
      if (err) emit({ event: 'rpc', target: c.target, ok: false, code: err.code, error: err.details || err.message });
      else {
        try { emit({ event: 'rpc', target: c.target, ok: true, backend: hostnameOf(resp) }); }
        catch (e) { emit({ event: 'rpc', target: c.target, ok: false, code: -1, error: 'bad response: ' + e.message }); }
      }
    }
    setTimeout(() => loop(c, gen), opts.intervalMs);
  });
}

function start() {
  sending = true;
  generation++;
  for (const c of clients) loop(c, generation);
}

function stop() {
  sending = false;
  generation++;
}

openChannels();
emit({ event: 'started', impl: 'grpc-js-xds', version: `grpc-js ${require('@grpc/grpc-js/package.json').version}, grpc-js-xds ${require('@grpc/grpc-js-xds/package.json').version}` });
start();

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  switch (line.trim()) {
    case 'pause': stop(); break;
    case 'resume': start(); break;
    case 'close': stop(); for (const c of clients) c.client.close(); clients = []; break;
    case 'open': stop(); openChannels(); start(); break;
    case 'quit': emit({ event: 'quit' }); process.exit(0);
    default: emit({ event: 'error', error: `unknown command ${line.trim()}` }); return;
  }
  emit({ event: line.trim() });
}).on('close', () => process.exit(0));
