package org.rpmp.client;

import java.nio.charset.StandardCharsets;
import java.security.GeneralSecurityException;
import java.security.MessageDigest;
import java.security.SecureRandom;
import java.util.Arrays;

import javax.crypto.Mac;
import javax.crypto.spec.SecretKeySpec;

/**
 * The client's side of AUTH / AUTH_PROOF on one connection (PROTOCOL.md "Authentication and tenants"): a fresh
 * nonce, the check of the node's proof and the client's proof. Pure bytes in and out, so the tests can compare
 * them with proofs computed from the spec's formula; RpmpClient sends and receives the frames.
 */
public final class AuthHandshake {
    private static final SecureRandom RANDOM = new SecureRandom();
    static final String NODE_LABEL = "rpmp-auth-v1 node\0";
    static final String CLIENT_LABEL = "rpmp-auth-v1 client\0";
    /** What a user whose handshake failed should check; names settings, never their values. */
    static final String CHECK = "check that the tenant and its secret match a line of the node's auth file "
        + "(Spark: spark.rpmp.auth.tenant, spark.rpmp.auth.secret or spark.rpmp.auth.secretFile)";

    private final Credentials credentials;
    private final byte[] clientNonce;

    public AuthHandshake(Credentials credentials) {
        this(credentials, newNonce());
    }

    /** With a given nonce: for tests only (a real connection takes a fresh one from SecureRandom). */
    AuthHandshake(Credentials credentials, byte[] clientNonce) {
        if (clientNonce.length != Protocol.NONCE_SIZE) throw new IllegalArgumentException("nonce must be 32 bytes");
        this.credentials = credentials;
        this.clientNonce = clientNonce.clone();
    }

    static byte[] newNonce() {
        byte[] n = new byte[Protocol.NONCE_SIZE];
        RANDOM.nextBytes(n);
        return n;
    }

    /** The AUTH request meta: {@code str tenant, bytes nonce}. */
    public byte[] authRequest() {
        return new MetaWriter().str(credentials.tenant()).bytes(clientNonce).toByteArray();
    }

    /**
     * Checks the node's AUTH answer ({@code bytes nonce, bytes proof}) and returns the AUTH_PROOF request meta
     * ({@code bytes proof}). A node whose proof is wrong does not know the tenant's secret: AUTH_FAILED.
     */
    public byte[] answer(byte[] authResponseMeta, String node) throws RpmpException {
        MetaReader r = new MetaReader(authResponseMeta, node);
        byte[] nodeNonce = fixedBytes(r, "nonce", node);
        byte[] nodeProof = fixedBytes(r, "proof", node);
        r.end("AUTH response");
        byte[] expected = proof(credentials.secret(), NODE_LABEL, credentials.tenant(), clientNonce, nodeNonce);
        if (!MessageDigest.isEqual(expected, nodeProof)) {
            throw new RpmpException(Protocol.AUTH_FAILED, "the node's proof does not match the secret given for tenant '"
                + credentials.tenant() + "': that secret is not the one the node's auth file holds for the tenant "
                + "(or this is not the node meant); " + CHECK, node);
        }
        return proofRequest(proof(credentials.secret(), CLIENT_LABEL, credentials.tenant(), clientNonce, nodeNonce));
    }

    /** The AUTH_PROOF request meta: {@code bytes proof}. */
    public static byte[] proofRequest(byte[] proof) {
        return new MetaWriter().bytes(proof).toByteArray();
    }

    private static byte[] fixedBytes(MetaReader r, String what, String node) throws RpmpException {
        long n = r.u32(what);
        if (n != Protocol.NONCE_SIZE) {
            throw new RpmpException(Protocol.BAD_FRAME, "AUTH response: " + what + " of " + n + " bytes, not 32", node);
        }
        if (r.remaining() < n) throw new RpmpException(Protocol.BAD_FRAME, "AUTH response: truncated " + what, node);
        byte[] b = new byte[(int) n];
        for (int i = 0; i < b.length; i++) b[i] = (byte) r.u8(what);
        return b;
    }

    /** HMAC-SHA256(secret, label || u8 len(tenant) || tenant || cn || nn). */
    static byte[] proof(byte[] secret, String label, String tenant, byte[] cn, byte[] nn) {
        byte[] t = tenant.getBytes(StandardCharsets.UTF_8);
        try {
            Mac mac = Mac.getInstance("HmacSHA256");
            mac.init(new SecretKeySpec(secret, "HmacSHA256"));
            mac.update(label.getBytes(StandardCharsets.US_ASCII));
            mac.update((byte) t.length);
            mac.update(t);
            mac.update(cn);
            mac.update(nn);
            return mac.doFinal();
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException("HmacSHA256 is not available in this JVM", e);
        } finally {
            Arrays.fill(secret, (byte) 0);
        }
    }

    /** The tenant this handshake authenticates as. */
    public String tenant() { return credentials.tenant(); }
}
