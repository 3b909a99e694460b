package org.rpmp.client;

import java.io.IOException;
import java.net.InetAddress;
import java.net.NetworkInterface;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.BasicFileAttributes;
import java.util.Map;
import java.util.Objects;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;

import org.apache.logging.log4j.LogManager;
import org.apache.logging.log4j.Logger;

/**
 * What this JVM knows about RPMP nodes on its own host: which node hosts are local, and read-only
 * channels to the files that hold their blocks, pool files and spill files alike (opened once, shared by
 * every reader; positional reads are thread-safe). A file this JVM cannot open (another mount namespace,
 * permissions, a spill file deleted meanwhile) is left alone for a minute, and readers use FETCH for what
 * is in it.
 *
 * <p>A node deletes spill files it no longer needs and may create a new one under an old name, so an open
 * channel is checked, at most every {@value #CHECK_SECONDS} s when files are asked for, against the file its
 * path names now: one whose file is gone or replaced is closed, so that this JVM neither keeps a deleted
 * file's disk space nor reads an old file for a new one.
 */
public final class LocalPools {
    private static final Logger LOG = LogManager.getLogger(LocalPools.class);
    static final long CHECK_SECONDS = 10;
    private static final long UNUSABLE_NANOS = TimeUnit.SECONDS.toNanos(60);

    /** An open file and the identity (device, inode) of the file it was opened on, null if unknown. */
    private record Open(FileChannel channel, Object key) {}

    private final Map<String, Boolean> localHosts = new ConcurrentHashMap<>();
    private final Map<String, Open> files = new ConcurrentHashMap<>();
    /** path -> System.nanoTime() until which it is not tried again. */
    private final Map<String, Long> unusable = new ConcurrentHashMap<>();
    private final Set<String> reported = ConcurrentHashMap.newKeySet();
    private volatile long lastCheck = System.nanoTime();

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

    /** A read-only channel to the file (a node's pool file or spill file), or null when it cannot be read from here. */
    FileChannel open(String path) {
        long now = System.nanoTime();
        Long until = unusable.get(path);
        if (until != null) {
            if (now - until < 0) return null;
            unusable.remove(path, until);
        }
        if (now - lastCheck > TimeUnit.SECONDS.toNanos(CHECK_SECONDS)) dropStale();
        Open o = files.get(path);
        if (o != null && o.channel().isOpen()) return o.channel();
        synchronized (this) {
            o = files.get(path);
            if (o != null && o.channel().isOpen()) return o.channel();
            try {
                Path p = Paths.get(path);
                FileChannel ch = FileChannel.open(p, StandardOpenOption.READ);
                Object key;
                try {
                    key = identity(p);
                } catch (IOException e) {
                    closeQuietly(ch);
                    throw e;
                }
                files.put(path, new Open(ch, key));
                if (reported.add(path)) LOG.info("RPMP reads co-located file {} directly", path);
                return ch;
            } catch (IOException | SecurityException e) {
                unusable.put(path, now + UNUSABLE_NANOS);
                if (reported.add("!" + path)) {
                    LOG.info("RPMP file {} is not readable here ({}); using FETCH for what is in it", path, e.toString());
                }
                return null;
            }
        }
    }

    /** Closes the channels whose path no longer names the file they were opened on (deleted or replaced). */
    synchronized void dropStale() {
        lastCheck = System.nanoTime();
        for (Map.Entry<String, Open> e : files.entrySet()) {
            Object now;
            try {
                now = identity(Paths.get(e.getKey()));
            } catch (IOException gone) {
                now = gone;   // no file there any more: never equal to a key
            }
            if (!Objects.equals(now, e.getValue().key()) || !e.getValue().channel().isOpen()) {
                files.remove(e.getKey(), e.getValue());
                closeQuietly(e.getValue().channel());
                LOG.debug("RPMP file {} was deleted or replaced; its channel is closed", e.getKey());
            }
        }
    }

    private static Object identity(Path p) throws IOException {
        return Files.readAttributes(p, BasicFileAttributes.class).fileKey();
    }

    private static void closeQuietly(FileChannel ch) {
        try {
            ch.close();
        } catch (IOException ignored) {
            // closing anyway
        }
    }

    /** Files open now (tests). */
    int openFiles() { return files.size(); }

    public void close() {
        for (Open o : files.values()) closeQuietly(o.channel());
        files.clear();
    }
}
