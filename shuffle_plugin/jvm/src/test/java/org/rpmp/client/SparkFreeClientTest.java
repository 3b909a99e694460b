package org.rpmp.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Collectors;
import java.util.stream.Stream;

import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;

/**
 * org.rpmp.client stays free of Spark and Scala, as Celeborn's client module is of its client-spark: the
 * protocol, codec and data path must not follow one Spark line's API, and org.rpmp.shuffle is the only
 * place that adapts them to Spark. Checked on the sources of every main source root (imports) and on the
 * compiled classes (any reference, fully qualified names in code included).
 */
class SparkFreeClientTest {
    private static final Pattern SPARK_IMPORT =
        Pattern.compile("^\\s*import\\s+(?:static\\s+)?(?:org\\.apache\\.spark|scala)\\.[^;]*;", Pattern.MULTILINE);

    @Test
    @DisplayName("no source of org.rpmp.client imports Spark or Scala")
    void sourcesImportNeitherSparkNorScala() throws IOException {
        List<Path> sources;
        try (Stream<Path> files = Files.walk(Paths.get("src"))) {   // src/main/java and any other source root
            sources = files.filter(p -> p.toString().endsWith(".java") && !p.startsWith(Paths.get("src", "test")))
                .filter(p -> p.getParent().endsWith(Paths.get("org", "rpmp", "client")))
                .collect(Collectors.toList());
        }
        assertFalse(sources.isEmpty(), "no org/rpmp/client sources under " + Paths.get("src").toAbsolutePath());
        List<String> found = new ArrayList<>();
        for (Path p : sources) {
            Matcher m = SPARK_IMPORT.matcher(Files.readString(p, StandardCharsets.UTF_8));
            while (m.find()) found.add(p + ": " + m.group().trim());
        }
        assertEquals(List.of(), found);
    }

    @Test
    @DisplayName("no class of org.rpmp.client refers to Spark or Scala")
    void classesReferToNeitherSparkNorScala() throws Exception {
        Path dir = Paths.get(Checksums.class.getResource("Checksums.class").toURI()).getParent();
        List<String> found = new ArrayList<>();
        try (Stream<Path> files = Files.list(dir)) {
            for (Path p : (Iterable<Path>) files.filter(f -> f.toString().endsWith(".class"))::iterator) {
                // Class names in the constant pool are modified UTF-8, ASCII for these packages.
                String text = new String(Files.readAllBytes(p), StandardCharsets.ISO_8859_1);
                if (text.contains("org/apache/spark/") || text.contains("scala/")) found.add(p.getFileName().toString());
            }
        }
        assertEquals(List.of(), found);
    }
}
