package org.rpmp.shuffle;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;

import org.apache.spark.SparkConf;
import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** spark.rpmp.auth.* and spark.rpmp.tls.*: where the tenant and the secret come from, and what is refused. */
class RpmpConfSecurityTest {
    private static SparkConf base() {
        return new SparkConf(false).set(RpmpConf.NODES, "127.0.0.1:7177");
    }

    @Test
    @DisplayName("no secret anywhere: the nodes run open, no tenant")
    void openByDefault() {
        RpmpConf c = new RpmpConf(base(), null);
        assertFalse(c.authEnabled());
        assertNull(c.tenant());
        assertNull(c.clientOptions("t").credentials);
        assertNull(c.clientOptions("t").tls);
        // Spark's secret without spark.authenticate is not taken.
        assertNull(RpmpConf.secret(base().set("spark.authenticate.secret", "x"), "y"));
    }

    @Test
    @DisplayName("the secret: spark.rpmp.auth.secret, then its file, then Spark's (conf, executor env, file)")
    void secretPrecedence(@TempDir Path tmp) throws Exception {
        Path f = tmp.resolve("secret");
        Files.writeString(f, "from-file\nignored\n");
        SparkConf spark = base().set("spark.authenticate", "true").set("spark.authenticate.secret", "spark-conf");
        assertEquals("mine", RpmpConf.secret(spark.clone().set(RpmpConf.AUTH_SECRET, "mine")
            .set(RpmpConf.AUTH_SECRET_FILE, f.toString()), "env"));
        assertEquals("from-file", RpmpConf.secret(spark.clone().set(RpmpConf.AUTH_SECRET_FILE, f.toString()), "env"));
        assertEquals("spark-conf", RpmpConf.secret(spark, "env"));
        SparkConf executor = base().set("spark.authenticate", "true");
        assertEquals("env", RpmpConf.secret(executor, "env"));
        assertEquals("from-file", RpmpConf.secret(executor.clone().set("spark.authenticate.secret.file", f.toString()), null));
        Files.writeString(f, "\n");
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
            () -> RpmpConf.secret(base().set(RpmpConf.AUTH_SECRET_FILE, f.toString()), null));
        assertTrue(e.getMessage().contains("holds no secret"), e.getMessage());
    }

    @Test
    @DisplayName("the tenant: spark.rpmp.auth.tenant, else the Spark user, which must be a tenant name")
    void tenant() {
        assertEquals("etl", RpmpConf.tenant(base().set(RpmpConf.AUTH_TENANT, "etl"), "john doe"));
        assertEquals("alice", RpmpConf.tenant(base(), "alice"));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> RpmpConf.tenant(base(), "john doe"));
        assertTrue(e.getMessage().contains("'john doe'") && e.getMessage().contains("set spark.rpmp.auth.tenant"),
            e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> RpmpConf.tenant(base().set(RpmpConf.AUTH_TENANT, "a/b"), "x"));
        assertTrue(e.getMessage().contains("spark.rpmp.auth.tenant='a/b'"), e.getMessage());
        RpmpConf c = new RpmpConf(base().set(RpmpConf.AUTH_TENANT, "etl").set(RpmpConf.AUTH_SECRET, "top-secret-1"), null);
        assertEquals("etl", c.tenant());
        assertEquals("etl", c.clientOptions("t").credentials.tenant());
        assertFalse(c.clientOptions("t").credentials.toString().contains("top-secret-1"));
    }

    @Test
    @DisplayName("TLS on: settings built from the conf, hostname verification on unless turned off")
    void tls() {
        RpmpConf on = new RpmpConf(base().set(RpmpConf.TLS_ENABLED, "true"), null);
        assertTrue(on.clientOptions("t").tls.verifyHostname());
        RpmpConf off = new RpmpConf(base().set(RpmpConf.TLS_ENABLED, "true").set(RpmpConf.TLS_VERIFY_HOSTNAME, "false"), null);
        assertFalse(off.clientOptions("t").tls.verifyHostname());
        RpmpConf missing = new RpmpConf(base().set(RpmpConf.TLS_ENABLED, "true").set(RpmpConf.TLS_CA_PEM, "/nonexistent/ca.pem"), null);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> missing.clientOptions("t"));
        assertTrue(e.getMessage().contains("/nonexistent/ca.pem"), e.getMessage());
    }
}
