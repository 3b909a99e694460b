package org.rpmp.shuffle;

import java.io.Serializable;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

import org.apache.spark.SparkConf;
import org.rpmp.client.Protocol;
import org.rpmp.client.RpmpClient;

/** The spark.rpmp.* settings, read once per ShuffleManager (driver and each executor). */
public final class RpmpConf implements Serializable {
    private static final long serialVersionUID = 1L;

    public static final String NODES = "spark.rpmp.nodes";
    public static final String REPLICAS = "spark.rpmp.replicas";
    public static final String PUSH_SIZE = "spark.rpmp.push.size";
    public static final String PUSH_MEMORY = "spark.rpmp.push.memory";
    public static final String PUSH_OFF_HEAP = "spark.rpmp.push.offHeap";
    public static final String PUSH_INFLIGHT = "spark.rpmp.push.inflight";
    public static final String PUSH_RETRIES = "spark.rpmp.push.retries";
    public static final String PUSH_RETRY_WAIT = "spark.rpmp.push.retryWait";
    public static final String FETCH_TIMEOUT = "spark.rpmp.fetch.timeout";
    public static final String CONNECT_TIMEOUT = "spark.rpmp.connect.timeout";
    public static final String FETCH_BUFFER = "spark.rpmp.fetch.buffer";
    public static final String FETCH_LOCAL = "spark.rpmp.fetch.local";
    public static final String REGISTER_TIMEOUT = "spark.rpmp.register.timeout";
    public static final String FALLBACK = "spark.rpmp.fallback";

    /** A seed node: host and port. */
    public record Address(String host, int port) implements Serializable {
        @Override
        public String toString() { return host + ":" + port; }
    }

    public final List<Address> nodes;
    public final int replicas;
    public final int pushSize;
    public final long pushMemory;
    public final boolean pushOffHeap;
    public final int pushInflight;
    public final int pushRetries;
    public final long pushRetryWaitMs;
    public final int fetchTimeoutMs;
    public final int connectTimeoutMs;
    public final long fetchBuffer;
    public final boolean fetchLocal;
    public final long registerTimeoutMs;
    public final FallbackPolicy fallback;

    public RpmpConf(SparkConf conf) {
        this.nodes = parseNodes(conf.get(NODES, ""));
        this.replicas = conf.getInt(REPLICAS, 1);
        long size = conf.getSizeAsBytes(PUSH_SIZE, "4m");
        // A segment must fit one PUSH (64 MiB) with room for the record that overflows the threshold.
        this.pushSize = (int) Math.max(1024, Math.min(size, Protocol.MAX_SEGMENT / 2));
        this.pushMemory = Math.max(pushSize, conf.getSizeAsBytes(PUSH_MEMORY, "64m"));
        this.pushOffHeap = conf.getBoolean(PUSH_OFF_HEAP, true);
        this.pushInflight = Math.max(1, conf.getInt(PUSH_INFLIGHT, 4));
        this.pushRetries = Math.max(0, conf.getInt(PUSH_RETRIES, 3));
        this.pushRetryWaitMs = Math.max(0, conf.getTimeAsMs(PUSH_RETRY_WAIT, "500ms"));
        this.fetchTimeoutMs = (int) Math.min(Integer.MAX_VALUE, conf.getTimeAsMs(FETCH_TIMEOUT, "120s"));
        this.connectTimeoutMs = (int) Math.min(Integer.MAX_VALUE, conf.getTimeAsMs(CONNECT_TIMEOUT, "10s"));
        this.fetchBuffer = Math.max(0, conf.getSizeAsBytes(FETCH_BUFFER, "48m"));
        this.fetchLocal = conf.getBoolean(FETCH_LOCAL, true);
        this.registerTimeoutMs = Math.max(0, conf.getTimeAsMs(REGISTER_TIMEOUT, "30s"));
        this.fallback = FallbackPolicy.parse(conf.get(FALLBACK, "auto"));
        if (replicas < 1 || replicas > 255) throw new IllegalArgumentException(REPLICAS + " must be 1..255, got " + replicas);
    }

    /** "host:port,host:port" (IPv6 as [addr]:port) into addresses; blanks are skipped. */
    public static List<Address> parseNodes(String spec) {
        List<Address> out = new ArrayList<>();
        for (String part : spec.split(",")) {
            String s = part.trim();
            if (s.isEmpty()) continue;
            int colon = s.lastIndexOf(':');
            if (colon <= 0 || colon == s.length() - 1) {
                throw new IllegalArgumentException(NODES + ": '" + s + "' is not host:port");
            }
            String host = s.substring(0, colon);
            if (host.startsWith("[") && host.endsWith("]")) host = host.substring(1, host.length() - 1);
            int port;
            try {
                port = Integer.parseInt(s.substring(colon + 1));
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException(NODES + ": bad port in '" + s + "'");
            }
            if (port < 1 || port > 65535) throw new IllegalArgumentException(NODES + ": bad port in '" + s + "'");
            out.add(new Address(host, port));
        }
        return Collections.unmodifiableList(out);
    }

    public RpmpClient.Options clientOptions(String clientName) {
        RpmpClient.Options o = new RpmpClient.Options();
        o.connectTimeoutMs = connectTimeoutMs;
        o.readTimeoutMs = fetchTimeoutMs;
        o.maxInflight = pushInflight;
        o.clientName = clientName;
        return o;
    }
}
