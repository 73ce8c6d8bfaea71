package holdfast;

import io.grpc.CallOptions;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.MethodDescriptor;
import io.grpc.Status;
import io.grpc.stub.ClientCalls;
import java.io.BufferedReader;
import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import com.google.common.util.concurrent.ListenableFuture;

/**
 * A gRPC application written with grpc-java's xDS client: an xDS client Holdfast's developers did
 * not write. It speaks the same small protocol as e2e/cmd/xdsapp (grpc-go),
 * e2e/clients/node/xdsapp.js and e2e/clients/python/xdsapp.py:
 *
 * <pre>
 *   java -cp ... holdfast.XdsApp --target NAME [--target NAME...] [--interval-ms 25]
 *                                [--rpc-timeout-ms 1000] [--idle-timeout-ms N]
 * </pre>
 *
 * The bootstrap comes from GRPC_XDS_BOOTSTRAP. For every target it sends one RPC
 * (grpc.testing.TestService/UnaryCall, not wait-for-ready) at a time, every --interval-ms, and
 * prints one JSON line per RPC. Commands on stdin, one per line, each acknowledged with
 * {"event":"&lt;command&gt;"}: pause, resume, close, open, quit.
 */
public final class XdsApp {
  private static final MethodDescriptor.Marshaller<byte[]> BYTES =
      new MethodDescriptor.Marshaller<byte[]>() {
        @Override
        public InputStream stream(byte[] value) {
          return new ByteArrayInputStream(value);
        }

        @Override
        public byte[] parse(InputStream in) {
          try {
            return in.readAllBytes();
          } catch (IOException e) {
            throw new UncheckedIOException(e);
          }
        }
      };

  private static final MethodDescriptor<byte[], byte[]> UNARY_CALL =
      MethodDescriptor.<byte[], byte[]>newBuilder()
          .setType(MethodDescriptor.MethodType.UNARY)
          .setFullMethodName("grpc.testing.TestService/UnaryCall")
          .setRequestMarshaller(BYTES)
          .setResponseMarshaller(BYTES)
          .build();

  private static final PrintStream OUT = new PrintStream(System.out, true, StandardCharsets.UTF_8);

  private final List<String> targets;
  private final long intervalMs;
  private final long rpcTimeoutMs;
  private final long idleTimeoutMs;

  // guarded by this
  private boolean sending;
  private long generation;
  private final List<ManagedChannel> channels = new ArrayList<>();

  private XdsApp(List<String> targets, long intervalMs, long rpcTimeoutMs, long idleTimeoutMs) {
    this.targets = targets;
    this.intervalMs = intervalMs;
    this.rpcTimeoutMs = rpcTimeoutMs;
    this.idleTimeoutMs = idleTimeoutMs;
  }

  static synchronized void emit(String json) {
    OUT.println(json);
  }

  static String quote(String s) {
    StringBuilder b = new StringBuilder("\"");
    for (char c : s.toCharArray()) {
      switch (c) {
        case '"': b.append("\\\""); break;
        case '\\': b.append("\\\\"); break;
        case '\n': b.append("\\n"); break;
        case '\r': b.append("\\r"); break;
        case '\t': b.append("\\t"); break;
        default:
          if (c < 0x20) {
            b.append(String.format("\\u%04x", (int) c));
          } else {
            b.append(c);
          }
      }
    }
    return b.append('"').toString();
  }

  /** Reads SimpleResponse.hostname (field 6, a string) from the serialised response. */
  static String hostnameOf(byte[] buf) {
    int[] i = {0};
    String host = "";
    while (i[0] < buf.length) {
      long tag = varint(buf, i);
      int field = (int) (tag >>> 3);
      int wire = (int) (tag & 7);
      switch (wire) {
        case 0: varint(buf, i); break;
        case 1: i[0] += 8; break;
        case 5: i[0] += 4; break;
        case 2: {
          int n = (int) varint(buf, i);
          if (i[0] + n > buf.length) {
            throw new IllegalArgumentException("truncated field");
          }
          if (field == 6) {
            host = new String(buf, i[0], n, StandardCharsets.UTF_8);
          }
          i[0] += n;
          break;
        }
        default: throw new IllegalArgumentException("wire type " + wire);
      }
    }
    return host;
  }

  static long varint(byte[] buf, int[] i) {
    long v = 0;
    for (int shift = 0; ; shift += 7) {
      if (i[0] >= buf.length) {
        throw new IllegalArgumentException("truncated varint");
      }
      byte b = buf[i[0]++];
      v |= (long) (b & 0x7F) << shift;
      if ((b & 0x80) == 0) {
        return v;
      }
    }
  }

  synchronized void openChannels() {
    for (String t : targets) {
      ManagedChannelBuilder<?> b = Grpc.newChannelBuilder("xds:///" + t, InsecureChannelCredentials.create());
      if (idleTimeoutMs > 0) {
        b.idleTimeout(idleTimeoutMs, TimeUnit.MILLISECONDS);
      }
      channels.add(b.build());
    }
  }

  synchronized void closeChannels() {
    for (ManagedChannel ch : channels) {
      ch.shutdownNow();
    }
    channels.clear();
  }

  synchronized void start() {
    sending = true;
    long gen = ++generation;
    for (int k = 0; k < channels.size(); k++) {
      String target = targets.get(k);
      ManagedChannel ch = channels.get(k);
      Thread th = new Thread(() -> loop(target, ch, gen), "rpc-" + target);
      th.setDaemon(true);
      th.start();
    }
  }

  synchronized void stop() {
    sending = false;
    generation++;
    notifyAll();
  }

  synchronized boolean current(long gen) {
    return sending && gen == generation;
  }

  void loop(String target, ManagedChannel ch, long gen) {
    while (current(gen)) {
      String ev;
      // Not ClientCalls.blockingUnaryCall: its ThreadlessExecutor can miss the call's
      // completion and park for ever, deadline or not (grpc-java#12456, open; seen here once in
      // a full run: one target's thread parked in waitAndDrain for over 60 s). The future form
      // completes on the channel's executor; waiting a second past the deadline bounds a
      // client that still never completes, reported as a failed RPC that says so.
      ListenableFuture<byte[]> call = ClientCalls.futureUnaryCall(ch.newCall(UNARY_CALL,
          CallOptions.DEFAULT.withDeadlineAfter(rpcTimeoutMs, TimeUnit.MILLISECONDS)), new byte[0]);
      try {
        byte[] resp = call.get(rpcTimeoutMs + 1000, TimeUnit.MILLISECONDS);
        try {
          ev = "{\"event\":\"rpc\",\"target\":" + quote(target) + ",\"ok\":true,\"backend\":" + quote(hostnameOf(resp)) + "}";
        } catch (IllegalArgumentException e) {
          ev = "{\"event\":\"rpc\",\"target\":" + quote(target) + ",\"ok\":false,\"code\":-1,\"error\":" + quote("bad response: " + e.getMessage()) + "}";
        }
      } catch (ExecutionException e) {
        Status st = Status.fromThrowable(e.getCause());
        String detail = st.getDescription() != null ? st.getDescription() : st.getCode().toString();
        ev = "{\"event\":\"rpc\",\"target\":" + quote(target) + ",\"ok\":false,\"code\":" + st.getCode().value() + ",\"error\":" + quote(detail) + "}";
      } catch (TimeoutException e) {
        call.cancel(true);
        ev = "{\"event\":\"rpc\",\"target\":" + quote(target) + ",\"ok\":false,\"code\":-2,\"error\":" + quote("grpc-java: the call did not complete 1 s past its deadline") + "}";
      } catch (InterruptedException e) {
        call.cancel(true);
        return;
      }
      if (!current(gen)) {
        return;
      }
      emit(ev);
      synchronized (this) {
        try {
          wait(intervalMs);
        } catch (InterruptedException e) {
          return;
        }
      }
    }
  }

  public static void main(String[] args) throws IOException {
    List<String> targets = new ArrayList<>();
    long interval = 25, timeout = 1000, idle = 0;
    for (int k = 0; k < args.length; k++) {
      String a = args[k];
      if (k + 1 >= args.length) {
        System.err.println("xdsapp: " + a + " needs a value");
        System.exit(2);
      }
      String v = args[++k];
      switch (a) {
        case "--target": targets.add(v); break;
        case "--interval-ms": interval = Long.parseLong(v); break;
        case "--rpc-timeout-ms": timeout = Long.parseLong(v); break;
        case "--idle-timeout-ms": idle = Long.parseLong(v); break;
        default:
          System.err.println("xdsapp: unknown flag " + a);
          System.exit(2);
      }
    }
    if (targets.isEmpty()) {
      System.err.println("xdsapp: at least one --target");
      System.exit(2);
    }
    XdsApp app = new XdsApp(targets, interval, timeout, idle);
    app.openChannels();
    String version = io.grpc.xds.XdsNameResolverProvider.class.getPackage().getImplementationVersion();
    emit("{\"event\":\"started\",\"impl\":\"grpc-java\",\"version\":" + quote("grpc-java " + (version == null ? System.getProperty("holdfast.grpc.version", "?") : version)) + "}");
    app.start();
    BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    String line;
    while ((line = in.readLine()) != null) {
      String cmd = line.trim();
      switch (cmd) {
        case "pause": app.stop(); break;
        case "resume": app.start(); break;
        case "close": app.stop(); app.closeChannels(); break;
        case "open": app.stop(); app.openChannels(); app.start(); break;
        case "quit":
          emit("{\"event\":\"quit\"}");
          System.exit(0);
          return;
        default:
          emit("{\"event\":\"error\",\"error\":" + quote("unknown command " + cmd) + "}");
          continue;
      }
      emit("{\"event\":" + quote(cmd) + "}");
    }
    System.exit(0);
  }
}
