package org.rpmp.client;

import static org.rpmp.client.TestSupport.*;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.Socket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyStore;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;

import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLException;
import javax.net.ssl.SSLServerSocket;
import javax.net.ssl.TrustManagerFactory;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;

/**
 * The client over TLS against a node played by the test on a TLS server socket, with certificates made by the
 * JDK's keytool: the CA as a PEM file or a trust store, hostname verification (IP SAN 127.0.0.1) on and off, a
 * client certificate for a node that asks for one, and AUTH inside TLS.
 */
class TlsTest {
    private static final String PW = "changeit";
    private static Path dir;
    /** A certificate with IP SAN 127.0.0.1, and one naming another host only. */
    private static Path node;
    private static Path nodePem;
    private static Path other;
    private static Path otherPem;
    private static Path trustStore;
    private static Path client;
    private static Path clientPem;

    @BeforeAll
    static void certificates() throws Exception {
        dir = Files.createTempDirectory("rpmp-tls-test");
        node = keyPair("node", "ip:127.0.0.1");
        nodePem = exportPem(node, "node");
        other = keyPair("other", "dns:elsewhere.invalid");
        otherPem = exportPem(other, "other");
        client = keyPair("client", "dns:client.invalid");
        clientPem = exportPem(client, "client");
        trustStore = dir.resolve("trust.jks");
        keytool("-importcert", "-noprompt", "-alias", "node", "-file", nodePem.toString(), "-keystore",
            trustStore.toString(), "-storetype", "JKS", "-storepass", PW);
    }

    @AfterAll
    static void cleanUp() throws IOException {
        if (dir == null) return;
        try (var files = Files.list(dir)) {
            for (Path p : (Iterable<Path>) files::iterator) Files.deleteIfExists(p);
        }
        Files.deleteIfExists(dir);
    }

    private static Path keyPair(String name, String san) throws Exception {
        Path ks = dir.resolve(name + ".p12");
        keytool("-genkeypair", "-alias", name, "-keyalg", "EC", "-groupname", "secp256r1", "-dname", "CN=rpmp-test-" + name,
            "-ext", "SAN=" + san, "-validity", "2", "-keystore", ks.toString(), "-storetype", "PKCS12",
            "-storepass", PW, "-keypass", PW);
        return ks;
    }

    private static Path exportPem(Path ks, String alias) throws Exception {
        Path pem = dir.resolve(alias + ".pem");
        keytool("-exportcert", "-rfc", "-alias", alias, "-keystore", ks.toString(), "-storepass", PW, "-file", pem.toString());
        return pem;
    }

    private static void keytool(String... args) throws Exception {
        List<String> cmd = new ArrayList<>();
        cmd.add(Path.of(System.getProperty("java.home"), "bin", "keytool").toString());
        cmd.addAll(List.of(args));
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        String out = new String(p.getInputStream().readAllBytes());
        if (!p.waitFor(60, TimeUnit.SECONDS) || p.exitValue() != 0) throw new AssertionError("keytool failed: " + out);
    }

    /** A node on a TLS port serving one connection: HELLO, then PINGs (or what `behaviour` does after HELLO). */
    static FakeNode tlsNode(Path keyStore, Path clientCa, Consumer<Socket> behaviour) throws Exception {
        KeyManagerFactory kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
        kmf.init(KeyStore.getInstance(keyStore.toFile(), PW.toCharArray()), PW.toCharArray());
        TrustManagerFactory tmf = null;
        if (clientCa != null) {
            tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
            tmf.init(TlsSettings.pemTrustStore(clientCa.toString()));
        }
        SSLContext ctx = SSLContext.getInstance("TLS");
        ctx.init(kmf.getKeyManagers(), tmf == null ? null : tmf.getTrustManagers(), null);
        SSLServerSocket server =
                (SSLServerSocket) ctx.getServerSocketFactory().createServerSocket(0, 1, InetAddress.getLoopbackAddress());
        server.setNeedClientAuth(clientCa != null);
        return new FakeNode(server, behaviour);
    }

    static Consumer<Socket> pings() {
        return afterHello(s -> {
            try {
                InputStream in = s.getInputStream();
                OutputStream out = s.getOutputStream();
                AuthHandshakeTest.Frame f;
                while ((f = AuthHandshakeTest.readWhole(in)) != null) {
                    out.write(response(f.header(), Protocol.FLAG_RESPONSE, new byte[0], 0));
                    out.flush();
                }
            } catch (IOException ignored) {
                // client went away
            }
        });
    }

    static RpmpClient.Options tls(TlsSettings settings) {
        RpmpClient.Options o = quick();
        o.tls = settings;
        return o;
    }

    @Test
    @DisplayName("a PEM CA and a certificate for 127.0.0.1: connected, HELLO and PING over TLS")
    void pemCaWithHostnameVerification() throws Exception {
        try (FakeNode n = tlsNode(node, null, pings());
             RpmpClient c = RpmpClient.connect("127.0.0.1", n.port(),
                 tls(TlsSettings.create(null, null, nodePem.toString(), null, null, true)))) {
            expect("fake:1".equals(c.helloInfo().nodeId()), "HELLO over TLS: " + c.helloInfo());
            for (int i = 0; i < 3; i++) c.ping();
            expect(c.isIdleHealthy(), "an idle TLS connection is healthy");
            sleep(1100);   // idle for over a second: checked with a 1 ms read
            expect(c.isIdleHealthy(), "still healthy after a second idle");
            c.ping();
        }
    }

    @Test
    @DisplayName("an idle TLS connection the node closed is found unhealthy (the pool then opens a new one)")
    void closedIdleConnectionIsUnhealthy() throws Exception {
        try (FakeNode n = tlsNode(node, null, afterHello(s -> {
            try {
                byte[] h = readFrame(s.getInputStream());
                s.getOutputStream().write(response(h, Protocol.FLAG_RESPONSE, new byte[0], 0));
                s.getOutputStream().flush();
                s.close();
            } catch (IOException ignored) {
                // client went away
            }
        }));
             RpmpClient c = RpmpClient.connect("127.0.0.1", n.port(),
                 tls(TlsSettings.create(null, null, nodePem.toString(), null, null, true)))) {
            c.ping();
            long deadline = System.nanoTime() + 5_000_000_000L;
            while (c.isIdleHealthy() && System.nanoTime() < deadline) sleep(100);
            expect(!c.isIdleHealthy(), "a closed connection is not healthy");
        }
    }

    @Test
    @DisplayName("a node that stops reading times a TLS write out like a plain one (no hang)")
    void stalledWriteTimesOut() throws Exception {
        try (FakeNode n = tlsNode(node, null, afterHello(s -> sleep(15_000)));
             RpmpClient c = RpmpClient.connect("127.0.0.1", n.port(),
                 tls(TlsSettings.create(null, null, nodePem.toString(), null, null, true)))) {
            byte[] payload = new byte[32 << 20];
            long t0 = System.nanoTime();
            java.net.SocketTimeoutException e = expectThrows(java.net.SocketTimeoutException.class,
                () -> c.push("app", 1, 0, 0, 1, 0, Checksums.xxh3(payload, 0, payload.length), payload, 0, payload.length));
            long ms = (System.nanoTime() - t0) / 1_000_000;
            expect(e.getMessage().contains("no progress sending"), e.getMessage());
            expect(ms >= 1400 && ms < 8000, "timed out after " + ms + " ms");
            expect(!c.isReusable(), "broken after a timeout");
        }
    }

    @Test
    @DisplayName("a JKS trust store works as the CA too")
    void trustStore() throws Exception {
        try (FakeNode n = tlsNode(node, null, pings());
             RpmpClient c = RpmpClient.connect("127.0.0.1", n.port(),
                 tls(TlsSettings.create(trustStore.toString(), PW, null, null, null, true)))) {
            c.ping();
        }
    }

    @Test
    @DisplayName("a certificate that does not name 127.0.0.1 fails, unless hostname verification is off")
    void hostnameVerification() throws Exception {
        try (FakeNode n = tlsNode(other, null, pings())) {
            SSLException e = expectThrows(SSLException.class, () -> RpmpClient.connect("127.0.0.1", n.port(),
                tls(TlsSettings.create(null, null, otherPem.toString(), null, null, true))).close());
            expect(String.valueOf(e.getMessage()).contains("127.0.0.1"), "says which name did not match: " + e);
        }
        try (FakeNode n = tlsNode(other, null, pings());
             RpmpClient c = RpmpClient.connect("127.0.0.1", n.port(),
                 tls(TlsSettings.create(null, null, otherPem.toString(), null, null, false)))) {
            c.ping();
        }
    }

    @Test
    @DisplayName("a node whose CA is not trusted fails the handshake")
    void untrustedNode() throws Exception {
        try (FakeNode n = tlsNode(node, null, pings())) {
            expectThrows(SSLException.class, () -> RpmpClient.connect("127.0.0.1", n.port(),
                tls(TlsSettings.create(null, null, otherPem.toString(), null, null, true))).close());
        }
    }

    @Test
    @DisplayName("a node that asks for a client certificate gets the key store's; without one it refuses")
    void clientCertificate() throws Exception {
        try (FakeNode n = tlsNode(node, clientPem, pings());
             RpmpClient c = RpmpClient.connect("127.0.0.1", n.port(),
                 tls(TlsSettings.create(null, null, nodePem.toString(), client.toString(), PW, true)))) {
            c.ping();
        }
        try (FakeNode n = tlsNode(node, clientPem, pings())) {
            // TLS 1.3: the node's refusal may arrive with the first read, after the client's handshake is done.
            expectThrows(IOException.class, () -> {
                try (RpmpClient c = RpmpClient.connect("127.0.0.1", n.port(),
                        tls(TlsSettings.create(null, null, nodePem.toString(), null, null, true)))) {
                    c.ping();
                }
            });
        }
    }

    @Test
    @DisplayName("AUTH runs inside TLS: the handshake bytes are the same, the proof checks out")
    void authInsideTls() throws Exception {
        AuthHandshakeTest.Seen seen = new AuthHandshakeTest.Seen();
        RpmpClient.Options o = tls(TlsSettings.create(null, null, nodePem.toString(), null, null, true));
        o.credentials = new Credentials("bob", "bobs-secret");
        try (FakeNode n = tlsNode(node, null, AuthHandshakeTest.authNode(seen, "bobs-secret", "bobs-secret"));
             RpmpClient c = RpmpClient.connect("127.0.0.1", n.port(), o)) {
            expect("bob".equals(c.tenant()), "authenticated inside TLS");
            c.ping();
            expect(seen.pinged, "served after the handshake");
        }
    }

    @Test
    @DisplayName("bad TLS settings are clear errors: both CA forms, a missing file, a wrong store password")
    void badSettings() throws Exception {
        IllegalArgumentException e = expectThrows(IllegalArgumentException.class,
            () -> TlsSettings.create(trustStore.toString(), PW, nodePem.toString(), null, null, true));
        expect(e.getMessage().contains("not both"), e.getMessage());
        e = expectThrows(IllegalArgumentException.class,
            () -> TlsSettings.create(dir.resolve("nope.jks").toString(), PW, null, null, null, true));
        expect(e.getMessage().contains("nope.jks"), e.getMessage());
        e = expectThrows(IllegalArgumentException.class,
            () -> TlsSettings.create(trustStore.toString(), "wrong-pw-xyz", null, null, null, true));
        expect(e.getMessage().contains("trust.jks") && !e.getMessage().contains("wrong-pw-xyz"), e.getMessage());
        e = expectThrows(IllegalArgumentException.class,
            () -> TlsSettings.create(null, null, trustStore.toString(), null, null, true));
        expect(e.getMessage().contains("trust.jks"), e.getMessage());
    }
}
