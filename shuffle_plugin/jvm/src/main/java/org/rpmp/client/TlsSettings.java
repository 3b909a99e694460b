package org.rpmp.client;

import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.GeneralSecurityException;
import java.security.KeyStore;
import java.security.SecureRandom;
import java.security.cert.Certificate;
import java.security.cert.CertificateFactory;
import java.util.Collection;

import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.TrustManagerFactory;

/**
 * How to reach nodes over TLS (PROTOCOL.md "TLS"): the SSLContext that trusts the nodes' CA (a trust store or a
 * PEM file of CA certificates; the JVM's default trust store when neither is given), optionally with a client
 * certificate for nodes run with --tls-ca, and whether the node's certificate must name the host dialled.
 */
public record TlsSettings(SSLContext context, boolean verifyHostname) {
    /** TLS 1.2 or later, as the nodes speak. */
    static final String[] PROTOCOLS = {"TLSv1.3", "TLSv1.2"};

    /**
     * Builds the settings. trustStore (JKS or PKCS12, the type is detected) and caPem are alternatives (null:
     * not given); keyStore holds the client certificate and its key (its password also unlocks the key).
     */
    public static TlsSettings create(String trustStore, String trustStorePassword, String caPem, String keyStore,
                                     String keyStorePassword, boolean verifyHostname) {
        if (trustStore != null && caPem != null) {
            throw new IllegalArgumentException("give the nodes' CA as a trust store or as a PEM file, not both");
        }
        try {
            TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
            if (trustStore != null) {
                tmf.init(loadStore(trustStore, trustStorePassword, "trust store"));
            } else if (caPem != null) {
                tmf.init(pemTrustStore(caPem));
            } else {
                tmf.init((KeyStore) null);   // the JVM's default CAs
            }
            KeyManagerFactory kmf = null;
            if (keyStore != null) {
                kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
                kmf.init(loadStore(keyStore, keyStorePassword, "key store"), chars(keyStorePassword));
            }
            SSLContext ctx = SSLContext.getInstance("TLS");
            ctx.init(kmf == null ? null : kmf.getKeyManagers(), tmf.getTrustManagers(), new SecureRandom());
            return new TlsSettings(ctx, verifyHostname);
        } catch (GeneralSecurityException e) {
            throw new IllegalArgumentException("cannot set up TLS for RPMP: " + e.getMessage(), e);
        }
    }

    private static char[] chars(String password) {
        return password == null ? new char[0] : password.toCharArray();
    }

    private static KeyStore loadStore(String path, String password, String what) throws GeneralSecurityException {
        File f = new File(path);
        if (!f.isFile()) throw new IllegalArgumentException("RPMP TLS " + what + " " + path + " is not a readable file");
        try {
            return KeyStore.getInstance(f, chars(password));
        } catch (IOException e) {
            // The message of a wrong password or a damaged file; the password itself is never in it.
            throw new IllegalArgumentException("cannot read RPMP TLS " + what + " " + path + " (wrong password, or not "
                + "JKS/PKCS12?): " + e.getMessage(), e);
        }
    }

    /** The CA certificates of a PEM file as an in-memory trust store. */
    static KeyStore pemTrustStore(String path) throws GeneralSecurityException {
        Collection<? extends Certificate> certs;
        try (InputStream in = Files.newInputStream(Path.of(path))) {
            certs = CertificateFactory.getInstance("X.509").generateCertificates(in);
        } catch (IOException | java.security.cert.CertificateException e) {
            throw new IllegalArgumentException("cannot read the RPMP CA file " + path + " (PEM certificates expected): "
                + e.getMessage(), e);
        }
        if (certs.isEmpty()) throw new IllegalArgumentException("the RPMP CA file " + path + " holds no certificate");
        KeyStore ks = KeyStore.getInstance("PKCS12");
        try {
            ks.load(null, null);
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
        int i = 0;
        for (Certificate c : certs) ks.setCertificateEntry("rpmp-ca-" + i++, c);
        return ks;
    }
}
