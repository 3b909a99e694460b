package org.rpmp.client;

import static org.rpmp.client.TestSupport.*;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.Socket;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.util.Arrays;
import java.util.concurrent.atomic.AtomicReference;

import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;

import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;

/**
 * The client's AUTH / AUTH_PROOF bytes against a node played by the test, which computes every proof from
 * PROTOCOL.md's formula with javax.crypto.Mac (not with the client's code) and checks what the client sends.
 */
class AuthHandshakeTest {
    private static final String TENANT = "alice";
    private static final String SECRET = "s3cret-of-alice";

    /** HMAC-SHA256(secret, label "\0" || u8 len(tenant) || tenant || cn || nn), straight from the spec. */
    static byte[] specProof(String secret, String side, String tenant, byte[] cn, byte[] nn) throws Exception {
        Mac mac = Mac.getInstance("HmacSHA256");
        mac.init(new SecretKeySpec(secret.getBytes(StandardCharsets.UTF_8), "HmacSHA256"));
        byte[] t = tenant.getBytes(StandardCharsets.UTF_8);
        ByteBuffer msg = ByteBuffer.allocate(64 + t.length + cn.length + nn.length);
        msg.put(("rpmp-auth-v1 " + side).getBytes(StandardCharsets.US_ASCII)).put((byte) 0);
        msg.put((byte) t.length).put(t).put(cn).put(nn);
        return mac.doFinal(Arrays.copyOf(msg.array(), msg.position()));
    }

    /** A whole frame: header and meta (no request here carries data). */
    record Frame(byte[] header, byte[] meta) {
        int opcode() { return header[5] & 0xFF; }
    }

    static Frame readWhole(InputStream in) throws IOException {
        byte[] h = in.readNBytes(Protocol.HEADER_SIZE);
        if (h.length < Protocol.HEADER_SIZE) return null;
        ByteBuffer b = ByteBuffer.wrap(h).order(ByteOrder.LITTLE_ENDIAN);
        byte[] meta = in.readNBytes(b.getInt(16));
        in.readNBytes((int) b.getLong(24));
        return new Frame(h, meta);
    }

    static byte[] errorFrame(Frame req, int code, String message) {
        byte[] meta = new MetaWriter().u16(code).str(message).toByteArray();
        return response(req.header(), Protocol.FLAG_RESPONSE | Protocol.FLAG_ERROR, meta, 0);
    }

    /** What the played node saw of the client's handshake. */
    static final class Seen {
        volatile Frame auth;
        volatile Frame proof;
        volatile byte[] nodeNonce;
        volatile boolean closedAfterAuth;
        volatile boolean pinged;
    }

    /**
     * Plays a node with authentication on: HELLO, then AUTH answered with a fresh nonce and the proof made with
     * nodeSecret, then AUTH_PROOF checked against clientSecret's proof (AUTH_FAILED and close when it differs),
     * then PINGs.
     */
    static java.util.function.Consumer<Socket> authNode(Seen seen, String nodeSecret, String clientSecret) {
        return afterHello(s -> {
            try {
                InputStream in = s.getInputStream();
                OutputStream out = s.getOutputStream();
                Frame auth = readWhole(in);
                seen.auth = auth;
                MetaReader r = new MetaReader(auth.meta(), "test");
                String tenant = r.str("tenant");
                long n = r.u32("nonce");
                byte[] cn = new byte[(int) n];
                for (int i = 0; i < n; i++) cn[i] = (byte) r.u8("nonce");
                byte[] nn = AuthHandshake.newNonce();
                seen.nodeNonce = nn;
                byte[] meta = new MetaWriter().bytes(nn).bytes(specProof(nodeSecret, "node", tenant, cn, nn)).toByteArray();
                out.write(response(auth.header(), Protocol.FLAG_RESPONSE, meta, 0));
                out.flush();
                Frame proof = readWhole(in);
                if (proof == null) {
                    seen.closedAfterAuth = true;
                    return;
                }
                seen.proof = proof;
                byte[] want = new MetaWriter().bytes(specProof(clientSecret, "client", tenant, cn, nn)).toByteArray();
                if (!MessageDigest.isEqual(want, proof.meta())) {
                    out.write(errorFrame(proof, Protocol.AUTH_FAILED, "authentication failed"));
                    out.flush();
                    return;
                }
                out.write(response(proof.header(), Protocol.FLAG_RESPONSE, new byte[0], 0));
                out.flush();
                Frame ping;
                while ((ping = readWhole(in)) != null) {
                    seen.pinged = true;
                    out.write(response(ping.header(), Protocol.FLAG_RESPONSE, new byte[0], 0));
                    out.flush();
                }
            } catch (Exception ignored) {
                // client went away
            }
        });
    }

    static RpmpClient.Options withCredentials(String tenant, String secret) {
        RpmpClient.Options o = quick();
        o.credentials = new Credentials(tenant, secret);
        return o;
    }

    @Test
    @DisplayName("AUTH carries the tenant and a 32-byte nonce; AUTH_PROOF is the spec's HMAC; the connection then works")
    void handshakeBytesMatchTheSpec() throws Exception {
        Seen seen = new Seen();
        try (FakeNode n = new FakeNode(authNode(seen, SECRET, SECRET));
             RpmpClient c = RpmpClient.connect("127.0.0.1", n.port(), withCredentials(TENANT, SECRET))) {
            expect(TENANT.equals(c.tenant()), "authenticated as alice: " + c.tenant());
            c.ping();
            Frame auth = seen.auth;
            expect(auth.opcode() == 0x07, "AUTH is opcode 0x07: " + auth.opcode());
            // str tenant (u16 5, "alice"), bytes nonce (u32 32, 32 bytes): 2 + 5 + 4 + 32
            expect(auth.meta().length == 43, "AUTH meta length " + auth.meta().length);
            expect(auth.meta()[0] == 5 && auth.meta()[1] == 0, "u16 tenant length");
            expect(new String(auth.meta(), 2, 5, StandardCharsets.UTF_8).equals(TENANT), "tenant bytes");
            expect(Arrays.equals(Arrays.copyOfRange(auth.meta(), 7, 11), new byte[] {32, 0, 0, 0}), "u32 nonce length");
            byte[] cn = Arrays.copyOfRange(auth.meta(), 11, 43);
            expect(!Arrays.equals(cn, new byte[32]), "nonce is random, not zeros");
            Frame proof = seen.proof;
            expect(proof.opcode() == 0x08, "AUTH_PROOF is opcode 0x08: " + proof.opcode());
            byte[] want = specProof(SECRET, "client", TENANT, cn, seen.nodeNonce);
            byte[] expectedMeta = ByteBuffer.allocate(36).order(ByteOrder.LITTLE_ENDIAN).putInt(32).put(want).array();
            expect(Arrays.equals(proof.meta(), expectedMeta), "AUTH_PROOF meta = u32 32 + HMAC-SHA256 client proof");
            expect(seen.pinged, "the node served a PING after the handshake");
            String sent = new String(auth.meta(), StandardCharsets.ISO_8859_1) + new String(proof.meta(), StandardCharsets.ISO_8859_1);
            expect(!sent.contains(SECRET), "the secret never crosses the wire");
        }
    }

    @Test
    @DisplayName("every connection sends a fresh nonce")
    void noncesAreFresh() throws Exception {
        Seen a = new Seen();
        Seen b = new Seen();
        try (FakeNode n1 = new FakeNode(authNode(a, SECRET, SECRET));
             FakeNode n2 = new FakeNode(authNode(b, SECRET, SECRET));
             RpmpClient c1 = RpmpClient.connect("127.0.0.1", n1.port(), withCredentials(TENANT, SECRET));
             RpmpClient c2 = RpmpClient.connect("127.0.0.1", n2.port(), withCredentials(TENANT, SECRET))) {
            expect(!Arrays.equals(a.auth.meta(), b.auth.meta()), "two connections, two nonces");
        }
    }

    @Test
    @DisplayName("a node proof made with another secret (a wrong secret on either side) is AUTH_FAILED naming the node; no AUTH_PROOF is sent")
    void wrongNodeProofFails() throws Exception {
        Seen seen = new Seen();
        try (FakeNode n = new FakeNode(authNode(seen, "not-the-secret", SECRET))) {
            RpmpException e = expectThrows(RpmpException.class,
                () -> RpmpClient.connect("127.0.0.1", n.port(), withCredentials(TENANT, SECRET)).close());
            expect(e.code() == Protocol.AUTH_FAILED, "AUTH_FAILED: " + e);
            String m = e.getMessage();
            expect(m.contains("127.0.0.1:" + n.port()), "names the node: " + m);
            expect(m.contains("the node's proof does not match the secret given for tenant 'alice'"), "says what failed: " + m);
            expect(m.contains("spark.rpmp.auth.secret"), "says what to check: " + m);
            expect(!m.contains(SECRET), "never the secret: " + m);
            long deadline = System.nanoTime() + 2_000_000_000L;
            while (!seen.closedAfterAuth && System.nanoTime() < deadline) sleep(10);
            expect(seen.closedAfterAuth && seen.proof == null, "the client closed without sending its proof");
        }
    }

    @Test
    @DisplayName("a node refusing the client's proof (a wrong secret) is AUTH_FAILED with what to check")
    void wrongClientSecretFails() throws Exception {
        Seen seen = new Seen();
        String wrong = "wrong-secret-123";
        try (FakeNode n = new FakeNode(authNode(seen, wrong, SECRET))) {
            // The node knows `wrong` as alice's secret and proves it; the client, given `wrong` too, proves with
            // it, but this node expects SECRET from the client: its AUTH_PROOF is refused.
            RpmpException e = expectThrows(RpmpException.class,
                () -> RpmpClient.connect("127.0.0.1", n.port(), withCredentials(TENANT, wrong)).close());
            expect(e.code() == Protocol.AUTH_FAILED, "AUTH_FAILED: " + e);
            String m = e.getMessage();
            expect(m.contains("AUTH_FAILED from 127.0.0.1:" + n.port()), "names the node: " + m);
            expect(m.contains("refused tenant 'alice' (authentication failed)"), "the node's word: " + m);
            expect(m.contains("spark.rpmp.auth.tenant") && m.contains("auth file"), "what to check: " + m);
            expect(!m.contains(wrong) && !m.contains(SECRET), "never a secret: " + m);
        }
    }

    @Test
    @DisplayName("a client without credentials meeting a node that requires them is told to give a tenant and secret")
    void missingCredentialsHint() throws Exception {
        try (FakeNode n = new FakeNode(afterHello(s -> {
            try {
                Frame ping = readWhole(s.getInputStream());
                s.getOutputStream().write(errorFrame(ping, Protocol.AUTH_FAILED, "authenticate first (AUTH)"));
                s.getOutputStream().flush();
            } catch (IOException ignored) {
                // client went away
            }
        }));
             RpmpClient c = RpmpClient.connect("127.0.0.1", n.port(), quick())) {
            RpmpException e = expectThrows(RpmpException.class, c::ping);
            expect(e.code() == Protocol.AUTH_FAILED, "AUTH_FAILED");
            expect(e.getMessage().contains("requires authentication") && e.getMessage().contains("spark.rpmp.auth.tenant"),
                e.getMessage());
            expect(!c.isReusable(), "AUTH_FAILED closes the connection: not reusable");
        }
    }

    @Test
    @DisplayName("tenant names: 1..32 of A-Za-z0-9._-; credentials never print the secret; no U+001F apps or 0x1F keys")
    void tenantRulesAndRedaction() throws Exception {
        for (String ok : new String[] {"a", "alice", "A.b_c-9", "x".repeat(32)}) {
            expect(Credentials.isValidTenant(ok), ok);
        }
        for (String bad : new String[] {"", "x".repeat(33), "john doe", "a/b", "@cluster", "é"}) {
            expect(!Credentials.isValidTenant(bad), bad);
        }
        IllegalArgumentException e = expectThrows(IllegalArgumentException.class, () -> new Credentials("a b", SECRET));
        expect(e.getMessage().contains("1..32"), e.getMessage());
        Credentials c = new Credentials(TENANT, SECRET);
        expect(!c.toString().contains(SECRET) && c.toString().contains("redacted"), c.toString());
        expectThrows(IllegalArgumentException.class, () -> new Credentials(TENANT, ""));
        // Names a client may not send: they would pass for another tenant's qualified app or key.
        expectThrows(IllegalArgumentException.class, () -> Requests.checkApp("other" + (char) 0x1F + "app"));
        expectThrows(IllegalArgumentException.class, () -> Requests.key(new byte[] {0x1F, 'k'}));
        expect(Requests.key(new byte[] {'k', 0x1F}).length == 6, "0x1F inside a key is fine");
    }
}
