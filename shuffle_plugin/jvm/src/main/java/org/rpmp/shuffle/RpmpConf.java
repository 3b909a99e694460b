package org.rpmp.shuffle;

import java.io.IOException;
import java.io.Serializable;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

import org.apache.spark.SparkConf;
import org.rpmp.client.Credentials;
import org.rpmp.client.Protocol;
import org.rpmp.client.RpmpClient;
import org.rpmp.client.TlsSettings;

/** The spark.rpmp.* settings, read once per ShuffleManager (driver and each executor). */
public final class RpmpConf implements Serializable {
    private static final long serialVersionUID = 1L;

    /**
     * RPMP nodes to reach first, host:port[,host:port] (IPv6 as [addr]:port): any nodes of the cluster, the others are
     * learned from them. Required.
     */
    public static final String NODES = "spark.rpmp.nodes";
    /** Copies of each partition, on distinct nodes (1..255): a shuffle survives replicas - 1 dead nodes. */
    public static final String REPLICAS = "spark.rpmp.replicas";
    /** Bytes of a partition's records a map task buffers before it pushes them as one segment (1 KiB to 32 MiB). */
    public static final String PUSH_SIZE = "spark.rpmp.push.size";
    /**
     * Bytes a map task may buffer over all its partitions; beyond, the largest are pushed early (at least push.size).
     */
    public static final String PUSH_MEMORY = "spark.rpmp.push.memory";
    /** Build segments in direct (off-heap) buffers; false: in heap buffers. */
    public static final String PUSH_OFF_HEAP = "spark.rpmp.push.offHeap";
    /** Pushes a task may have in flight to one node, awaiting their acknowledgement (at least 1). */
    public static final String PUSH_INFLIGHT = "spark.rpmp.push.inflight";
    /** Times a failed push (a node refusing it, a replica failing) is retried before the task fails. */
    public static final String PUSH_RETRIES = "spark.rpmp.push.retries";
    /** Wait before a failed push is retried. */
    public static final String PUSH_RETRY_WAIT = "spark.rpmp.push.retryWait";
    /** How long a request waits for a node's answer (the read timeout of every connection to the nodes). */
    public static final String FETCH_TIMEOUT = "spark.rpmp.fetch.timeout";
    /** How long opening a connection to a node may take. */
    public static final String CONNECT_TIMEOUT = "spark.rpmp.connect.timeout";
    /** Bytes of fetched segments a reduce task may hold ahead of the records it consumes. */
    public static final String FETCH_BUFFER = "spark.rpmp.fetch.buffer";
    /**
     * On a host with a node, read its partitions from the node's pool and spill files (one-sided: PARTITION_INFO, then
     * mapping the files) instead of FETCH.
     */
    public static final String FETCH_LOCAL = "spark.rpmp.fetch.local";
    /** How long the driver retries registering a shuffle while no node takes it, before spark.rpmp.fallback decides. */
    public static final String REGISTER_TIMEOUT = "spark.rpmp.register.timeout";
    /**
     * A shuffle no node registers in time: auto (Spark's sort shuffle writes it), never (the job fails), always (every
     * shuffle is a sort shuffle: A/B runs).
     */
    public static final String FALLBACK = "spark.rpmp.fallback";
    /** Tenant the connections authenticate as when there is a secret (default: the Spark user). */
    public static final String AUTH_TENANT = "spark.rpmp.auth.tenant";
    /**
     * The tenant's secret, as in the nodes' auth file (default: auth.secretFile's, else with spark.authenticate Spark's
     * own secret; none: the nodes run open).
     */
    public static final String AUTH_SECRET = "spark.rpmp.auth.secret";
    /** File whose first line is the tenant's secret, instead of auth.secret in the conf. */
    public static final String AUTH_SECRET_FILE = "spark.rpmp.auth.secretFile";
    /** Speak TLS to the nodes (nodes started with --tls-cert). */
    public static final String TLS_ENABLED = "spark.rpmp.tls.enabled";
    /** Trust store (JKS or PKCS12) the nodes' certificates are checked against (default: the JVM's); or tls.caPem. */
    public static final String TLS_TRUST_STORE = "spark.rpmp.tls.trustStore";
    /** Password of tls.trustStore. */
    public static final String TLS_TRUST_STORE_PASSWORD = "spark.rpmp.tls.trustStorePassword";
    /** PEM file of the CA the nodes' certificates are checked against, instead of a trust store. */
    public static final String TLS_CA_PEM = "spark.rpmp.tls.caPem";
    /** Key store with the client certificate and its key (for nodes started with --tls-ca). */
    public static final String TLS_KEY_STORE = "spark.rpmp.tls.keyStore";
    /** Password of tls.keyStore (it unlocks the key too). */
    public static final String TLS_KEY_STORE_PASSWORD = "spark.rpmp.tls.keyStorePassword";
    /** Check that a node's certificate names the host connected to. */
    public static final String TLS_VERIFY_HOSTNAME = "spark.rpmp.tls.verifyHostname";
    /** Spark's own shared secret (spark.authenticate), the default of spark.rpmp.auth.secret. */
    static final String SPARK_AUTHENTICATE = "spark.authenticate";
    static final String SPARK_AUTH_SECRET = "spark.authenticate.secret";
    static final String SPARK_AUTH_SECRET_FILE = "spark.authenticate.secret.file";
    /** How a standalone Worker hands an executor Spark's secret (SecurityManager.ENV_AUTH_SECRET), not in its conf. */
    static final String SPARK_AUTH_SECRET_ENV = "_SPARK_AUTH_SECRET";

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
    /** Tenant and secret for the nodes, or null: they run open. Transient: never serialized with the conf. */
    private final transient Credentials credentials;
    public final boolean tlsEnabled;
    private final String tlsTrustStore;
    private final transient String tlsTrustStorePassword;
    private final String tlsCaPem;
    private final String tlsKeyStore;
    private final transient String tlsKeyStorePassword;
    public final boolean tlsVerifyHostname;

    public RpmpConf(SparkConf conf) {
        this(conf, System.getenv(SPARK_AUTH_SECRET_ENV));
    }

    /** sparkSecretFromEnv: what the executor's environment holds of Spark's secret (null if nothing). */
    RpmpConf(SparkConf conf, String sparkSecretFromEnv) {
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
        String secret = secret(conf, sparkSecretFromEnv);
        this.credentials = secret == null ? null : new Credentials(tenant(conf), secret);
        this.tlsEnabled = conf.getBoolean(TLS_ENABLED, false);
        this.tlsTrustStore = blankToNull(conf.get(TLS_TRUST_STORE, ""));
        this.tlsTrustStorePassword = blankToNull(conf.get(TLS_TRUST_STORE_PASSWORD, ""));
        this.tlsCaPem = blankToNull(conf.get(TLS_CA_PEM, ""));
        this.tlsKeyStore = blankToNull(conf.get(TLS_KEY_STORE, ""));
        this.tlsKeyStorePassword = blankToNull(conf.get(TLS_KEY_STORE_PASSWORD, ""));
        this.tlsVerifyHostname = conf.getBoolean(TLS_VERIFY_HOSTNAME, true);
    }

    private static String blankToNull(String s) {
        return s == null || s.isBlank() ? null : s.trim();
    }

    /**
     * The secret for the nodes: spark.rpmp.auth.secret, else the file spark.rpmp.auth.secretFile names (its first
     * line), else, with spark.authenticate on, Spark's own secret: spark.authenticate.secret as the driver has it,
     * the _SPARK_AUTH_SECRET environment variable through which a standalone Worker hands it to executors, or
     * spark.authenticate.secret.file. null: no secret, the nodes are expected to run open.
     */
    static String secret(SparkConf conf, String sparkSecretFromEnv) {
        String s = blankToNull(conf.get(AUTH_SECRET, ""));
        if (s != null) return s;
        String file = blankToNull(conf.get(AUTH_SECRET_FILE, ""));
        if (file != null) return readSecretFile(file, AUTH_SECRET_FILE);
        if (!conf.getBoolean(SPARK_AUTHENTICATE, false)) return null;
        s = blankToNull(conf.get(SPARK_AUTH_SECRET, ""));
        if (s != null) return s;
        s = blankToNull(sparkSecretFromEnv);
        if (s != null) return s;
        file = blankToNull(conf.get(SPARK_AUTH_SECRET_FILE, ""));
        return file == null ? null : readSecretFile(file, SPARK_AUTH_SECRET_FILE);
    }

    private static String readSecretFile(String path, String key) {
        try {
            List<String> lines = Files.readAllLines(Path.of(path), StandardCharsets.UTF_8);
            String first = lines.isEmpty() ? "" : lines.get(0).trim();
            if (first.isEmpty()) throw new IllegalArgumentException(key + ": the file " + path + " holds no secret");
            return first;
        } catch (IOException e) {
            throw new IllegalArgumentException(key + ": cannot read the secret file " + path + ": " + e, e);
        }
    }

    /**
     * spark.rpmp.auth.tenant, else the Spark user (SPARK_USER, which Spark sets for the executors to the driver's
     * user, else the login user): it must be a valid tenant name, or the user is told to set the tenant.
     */
    static String tenant(SparkConf conf) {
        return tenant(conf, null);
    }

    /** As tenant(conf), with sparkUser standing for the Spark user when not null (tests). */
    static String tenant(SparkConf conf, String sparkUser) {
        String t = blankToNull(conf.get(AUTH_TENANT, ""));
        if (t != null) {
            if (!Credentials.isValidTenant(t)) {
                throw new IllegalArgumentException(AUTH_TENANT + "='" + t + "' is not a tenant name: 1.."
                    + Protocol.TENANT_MAX + " characters of A-Z a-z 0-9 . _ -");
            }
            return t;
        }
        String user = sparkUser != null ? sparkUser : sparkUser();
        if (!Credentials.isValidTenant(user)) {
            throw new IllegalArgumentException("the Spark user '" + user + "' is not a valid RPMP tenant name (1.."
                + Protocol.TENANT_MAX + " characters of A-Z a-z 0-9 . _ -): set " + AUTH_TENANT
                + " to the tenant of your secret in the nodes' auth file");
        }
        return user;
    }

    static String sparkUser() {
        try {
            return org.apache.spark.util.Utils.getCurrentUserName();
        } catch (RuntimeException | LinkageError e) {
            String env = System.getenv("SPARK_USER");
            return env != null ? env : System.getProperty("user.name", "");
        }
    }

    /** The tenant connections authenticate as, or null when the nodes are expected to run open. */
    public String tenant() { return credentials == null ? null : credentials.tenant(); }

    public boolean authEnabled() { return credentials != null; }

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
        o.credentials = credentials;
        if (tlsEnabled) {
            o.tls = TlsSettings.create(tlsTrustStore, tlsTrustStorePassword, tlsCaPem, tlsKeyStore, tlsKeyStorePassword,
                tlsVerifyHostname);
        }
        return o;
    }
}
