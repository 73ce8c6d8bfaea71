"""xdsapp is a gRPC application written with gRPC C-core through Python (Debian's
python3-grpcio 1.51, or PyPI's grpcio 1.85 in a virtualenv): an xDS client Holdfast's developers
did not write. It speaks the same small
protocol as e2e/cmd/xdsapp (grpc-go) and e2e/clients/node/xdsapp.js (gRPC for Node):

    /usr/bin/python3 xdsapp.py --target NAME [--target NAME...] [--interval-ms 25]
                               [--rpc-timeout-ms 1000] [--idle-timeout-ms N]

The bootstrap comes from GRPC_XDS_BOOTSTRAP. For every target it sends one RPC
(grpc.testing.TestService/UnaryCall, not wait-for-ready) at a time, every --interval-ms, and
prints one JSON line per RPC: {"event":"rpc","target":T,"ok":true,"backend":ID} or
{"event":"rpc","target":T,"ok":false,"code":N,"error":"..."}. Commands on stdin, one per line,
each acknowledged with {"event":"<command>"}: "pause" stops sending (channels stay open and
may go idle), "resume" starts again, "close" closes every channel, "open" makes new ones and
starts sending, "quit" exits 0.
"""

import argparse
import json
import sys
import threading

import grpc

METHOD = "/grpc.testing.TestService/UnaryCall"
out_lock = threading.Lock()


def emit(obj):
    line = json.dumps(obj, separators=(",", ":")) + "\n"
    with out_lock:
        sys.stdout.write(line)
        sys.stdout.flush()


def varint(buf, i):
    v, shift = 0, 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return v, i


def hostname_of(buf):
    """Reads SimpleResponse.hostname (field 6, a string) from the serialised response."""
    i, host = 0, ""
    while i < len(buf):
        tag, i = varint(buf, i)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            _, i = varint(buf, i)
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            n, i = varint(buf, i)
            if field == 6:
                host = buf[i:i + n].decode("utf-8")
            i += n
        else:
            raise ValueError("wire type %d" % wire)
    return host


class App:
    def __init__(self, opts):
        self.opts = opts
        self.cond = threading.Condition()
        self.sending = False
        self.generation = 0
        self.channels = []

    def open_channels(self):
        options = []
        if self.opts.idle_timeout_ms > 0:
            options.append(("grpc.client_idle_timeout_ms", self.opts.idle_timeout_ms))
        self.channels = [(t, grpc.insecure_channel("xds:///" + t, options=options)) for t in self.opts.target]

    def start(self):
        with self.cond:
            self.sending = True
            self.generation += 1
            gen = self.generation
        for target, ch in self.channels:
            call = ch.unary_unary(METHOD, request_serializer=None, response_deserializer=None)
            threading.Thread(target=self.loop, args=(target, call, gen), daemon=True).start()

    def stop(self):
        with self.cond:
            self.sending = False
            self.generation += 1
            self.cond.notify_all()

    def current(self, gen):
        with self.cond:
            return self.sending and gen == self.generation

    def loop(self, target, call, gen):
        while self.current(gen):
            try:
                resp = call(b"", timeout=self.opts.rpc_timeout_ms / 1000.0)
                try:
                    ev = {"event": "rpc", "target": target, "ok": True, "backend": hostname_of(resp)}
                except ValueError as e:
                    ev = {"event": "rpc", "target": target, "ok": False, "code": -1, "error": "bad response: %s" % e}
            except grpc.RpcError as e:
                ev = {"event": "rpc", "target": target, "ok": False, "code": e.code().value[0], "error": e.details() or str(e.code())}
            except ValueError as e:  # a call on a closed channel
                ev = {"event": "rpc", "target": target, "ok": False, "code": -1, "error": str(e)}
            if not self.current(gen):
                return
            emit(ev)
            with self.cond:
                self.cond.wait(self.opts.interval_ms / 1000.0)


def main():
    p = argparse.ArgumentParser(description="a gRPC C-core xDS client for Holdfast's tests")
    p.add_argument("--target", action="append", required=True)
    p.add_argument("--interval-ms", type=int, default=25)
    p.add_argument("--rpc-timeout-ms", type=int, default=1000)
    p.add_argument("--idle-timeout-ms", type=int, default=0)
    opts = p.parse_args()
    app = App(opts)
    app.open_channels()
    origin = "python3-grpcio" if grpc.__file__.startswith("/usr/lib/") else "grpcio from PyPI"
    emit({"event": "started", "impl": "grpc-core", "version": "grpc-core (%s) %s" % (origin, grpc.__version__)})
    app.start()
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "pause":
            app.stop()
        elif cmd == "resume":
            app.start()
        elif cmd == "close":
            app.stop()
            for _, ch in app.channels:
                ch.close()
            app.channels = []
        elif cmd == "open":
            app.stop()
            app.open_channels()
            app.start()
        elif cmd == "quit":
            emit({"event": "quit"})
            return 0
        else:
            emit({"event": "error", "error": "unknown command %s" % cmd})
            continue
        emit({"event": cmd})
    return 0


if __name__ == "__main__":
    sys.exit(main())
