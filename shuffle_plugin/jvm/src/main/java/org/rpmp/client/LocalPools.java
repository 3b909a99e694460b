package org.rpmp.client;

import java.io.IOException;
import java.net.InetAddress;
import java.net.NetworkInterface;
import java.nio.channels.FileChannel;
import java.nio.file.Paths;
import java.nio.file.StandardOpenOption;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

import org.apache.logging.log4j.LogManager;
import org.apache.logging.log4j.Logger;

/**
 * What this JVM knows about RPMP nodes on its own host: which node hosts are local, and read-only
 * channels to their pool files (opened once, shared by every reader; positional reads are thread-safe).
 * A pool file this JVM cannot open (another mount namespace, permissions) is remembered as unusable,
 * and readers use FETCH for that node.
 */
public final class LocalPools {
    private static final Logger LOG = LogManager.getLogger(LocalPools.class);

    private final Map<String, Boolean> localHosts = new ConcurrentHashMap<>();
    private final Map<String, FileChannel> files = new ConcurrentHashMap<>();
    private final Map<String, Boolean> unusable = new ConcurrentHashMap<>();

    boolean isLocal(String host) {
        return localHosts.computeIfAbsent(host, h -> {
            try {
                InetAddress a = InetAddress.getByName(h);
                return a.isLoopbackAddress() || a.isAnyLocalAddress() || NetworkInterface.getByInetAddress(a) != null;
            } catch (IOException e) {
                return false;
            }
        });
    }

    /** The pool file's channel, or null when it cannot be read from here. */
    FileChannel open(String path) {
        if (unusable.containsKey(path)) return null;
        FileChannel ch = files.get(path);
        if (ch != null && ch.isOpen()) return ch;
        synchronized (this) {
            ch = files.get(path);
            if (ch != null && ch.isOpen()) return ch;
            try {
                ch = FileChannel.open(Paths.get(path), StandardOpenOption.READ);
                files.put(path, ch);
                LOG.info("RPMP reads co-located pool file {} directly", path);
                return ch;
            } catch (IOException | SecurityException e) {
                unusable.put(path, Boolean.TRUE);
                LOG.info("RPMP pool file {} is not readable here ({}); using FETCH", path, e.toString());
                return null;
            }
        }
    }

    public void close() {
        for (FileChannel ch : files.values()) {
            try {
                ch.close();
            } catch (IOException ignored) {
                // closing anyway
            }
        }
        files.clear();
    }
}
