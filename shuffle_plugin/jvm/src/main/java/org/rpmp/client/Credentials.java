package org.rpmp.client;

import java.nio.charset.StandardCharsets;
import java.util.Arrays;

/**
 * A tenant and its secret (PROTOCOL.md "Authentication and tenants"). toString never shows the secret, so the
 * object may be logged or end up in an exception message.
 */
public final class Credentials {
    private final String tenant;
    private final byte[] secret;

    /** tenant: 1..32 of A-Z a-z 0-9 . _ - ; secret: not empty (its UTF-8 bytes are the HMAC key). */
    public Credentials(String tenant, String secret) {
        checkTenant(tenant);
        if (secret == null || secret.isEmpty()) throw new IllegalArgumentException("the RPMP secret is empty");
        this.tenant = tenant;
        this.secret = secret.getBytes(StandardCharsets.UTF_8);
    }

    /** IllegalArgumentException unless name is 1..TENANT_MAX characters of A-Z a-z 0-9 . _ - */
    public static void checkTenant(String name) {
        if (!isValidTenant(name)) {
            throw new IllegalArgumentException("bad RPMP tenant name '" + name + "': needs 1.." + Protocol.TENANT_MAX
                + " characters of A-Z a-z 0-9 . _ -");
        }
    }

    public static boolean isValidTenant(String name) {
        if (name == null || name.isEmpty() || name.length() > Protocol.TENANT_MAX) return false;
        for (int i = 0; i < name.length(); i++) {
            char c = name.charAt(i);
            boolean ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
                || c == '.' || c == '_' || c == '-';
            if (!ok) return false;
        }
        return true;
    }

    public String tenant() { return tenant; }

    /** The HMAC key: a copy. */
    byte[] secret() { return Arrays.copyOf(secret, secret.length); }

    @Override
    public String toString() { return "Credentials(tenant " + tenant + ", secret redacted)"; }
}
