package org.rpmp.shuffle;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.apache.spark.SparkConf;
import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;

/** The Spark SQL settings the driver's manager gives an RPMP application, unless the user chose otherwise. */
class SqlDefaultsTest {
    @Test
    @DisplayName("AQE's local shuffle reader: off by default, a user's choice kept")
    void localShuffleReaderOffUnlessChosen() {
        SparkConf unset = new SparkConf(false);
        RpmpShuffleManager.sqlDefaults(unset);
        assertEquals("false", unset.get(RpmpShuffleManager.LOCAL_SHUFFLE_READER));
        SparkConf chosen = new SparkConf(false).set(RpmpShuffleManager.LOCAL_SHUFFLE_READER, "true");
        RpmpShuffleManager.sqlDefaults(chosen);
        assertEquals("true", chosen.get(RpmpShuffleManager.LOCAL_SHUFFLE_READER));
    }
}
