package org.rpmp.client;

import static org.rpmp.client.TestSupport.*;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.Socket;
import java.net.SocketTimeoutException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;

import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.MethodOrderer;
import org.junit.jupiter.api.Order;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestInstance;
import org.junit.jupiter.api.TestMethodOrder;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** Fake nodes in this process that misbehave: each must end in a clear exception, quickly. */
@SuppressWarnings({"unused", "resource"})
class MisbehavingNodeTest {
    @Test
    @DisplayName("a node that never answers HELLO times out")
    void silentHelloTimesOut() throws Exception {
        try (FakeNode n = new FakeNode(s -> sleep(10_000))) {
            long t0 = System.nanoTime();
            try {
                RpmpClient.connect("127.0.0.1", n.port(), quick()).close();
                throw new AssertionError("connected");
            } catch (SocketTimeoutException e) {
                long ms = (System.nanoTime() - t0) / 1_000_000;
                expect(ms >= 1400 && ms < 5000, "timed out after " + ms + " ms");
            }
        }
    }

    @Test
    @DisplayName("a node that goes silent mid-FETCH times out, connection broken")
    void silentMidFetchTimesOut() throws Exception {
        try (FakeNode n = new FakeNode(afterHello(s -> {
            try {
                byte[] req = readFrame(s.getInputStream());
                // One frame announcing a record, then only half of it.
                byte[] rec = new SegmentRecord(0, 1, 0, Checksums.xxh3(new byte[100], 0, 100), new byte[100]).encode();
                OutputStream out = s.getOutputStream();
                out.write(response(req, Protocol.FLAG_RESPONSE, new MetaWriter().u32(1).toByteArray(), rec.length));
                out.write(rec, 0, 50);
                out.flush();
                sleep(10_000);
            } catch (IOException ignored) {
                // client went away
            }
        }))) {
            RpmpClient c = RpmpClient.connect("127.0.0.1", n.port(), quick());
            RpmpClient.FetchStream st = c.fetch("a", 1, 0, 0, Protocol.END_MAP_ALL, new long[0]);
            try {
                st.next();
                throw new AssertionError("read a half record");
            } catch (SocketTimeoutException e) {
                expect(!c.isReusable(), "broken after a timeout");
            }
            c.close();
        }
    }

    @Test
    @DisplayName("garbage instead of a frame is BAD_FRAME")
    void garbageIsBadFrame() throws Exception {
        try (FakeNode n = new FakeNode(afterHello(s -> {
            try {
                readFrame(s.getInputStream());
                byte[] junk = new byte[64];
                java.util.Arrays.fill(junk, (byte) 'x');
                s.getOutputStream().write(junk);
                s.getOutputStream().flush();
                sleep(2000);
            } catch (IOException ignored) {
                // client went away
            }
        }))) {
            RpmpClient c = RpmpClient.connect("127.0.0.1", n.port(), quick());
            expect(expectError(c::ping) == Protocol.BAD_FRAME, "BAD_FRAME");
            expect(!c.isReusable(), "broken");
            c.close();
        }
    }

    @Test
    @DisplayName("a 1 TiB data_len is refused before any allocation")
    void hugeDataLenRefused() throws Exception {
        try (FakeNode n = new FakeNode(afterHello(s -> {
            try {
                byte[] req = readFrame(s.getInputStream());
                s.getOutputStream().write(response(req, Protocol.FLAG_RESPONSE, new MetaWriter().u32(1).toByteArray(), 1L << 40));
                s.getOutputStream().flush();
                sleep(2000);
            } catch (IOException ignored) {
                // client went away
            }
        }))) {
            RpmpClient c = RpmpClient.connect("127.0.0.1", n.port(), quick());
            RpmpClient.FetchStream st = c.fetch("a", 1, 0, 0, Protocol.END_MAP_ALL, new long[0]);
            expect(expectError(st::next) == Protocol.TOO_LARGE, "TOO_LARGE");
            c.close();
        }
    }

    @Test
    @DisplayName("a record claiming 1 GiB inside a small frame is BAD_FRAME")
    void hugeRecordInSmallFrameIsBadFrame() throws Exception {
        try (FakeNode n = new FakeNode(afterHello(s -> {
            try {
                byte[] req = readFrame(s.getInputStream());
                ByteBuffer rec = ByteBuffer.allocate(64).order(ByteOrder.LITTLE_ENDIAN);
                rec.putInt(Protocol.RECORD_MAGIC).putInt(0).putLong(1).putInt(0).putInt(1 << 30).putLong(0);
                OutputStream out = s.getOutputStream();
                out.write(response(req, Protocol.FLAG_RESPONSE, new MetaWriter().u32(1).toByteArray(), 64));
                out.write(rec.array());
                out.flush();
                sleep(2000);
            } catch (IOException ignored) {
                // client went away
            }
        }))) {
            RpmpClient c = RpmpClient.connect("127.0.0.1", n.port(), quick());
            RpmpClient.FetchStream st = c.fetch("a", 1, 0, 0, Protocol.END_MAP_ALL, new long[0]);
            expect(expectError(st::next) == Protocol.BAD_FRAME, "BAD_FRAME");
            c.close();
        }
    }

    @Test
    @DisplayName("a response for another request id is BAD_FRAME")
    void wrongRequestIdIsBadFrame() throws Exception {
        try (FakeNode n = new FakeNode(afterHello(s -> {
            try {
                byte[] req = readFrame(s.getInputStream());
                ByteBuffer.wrap(req).order(ByteOrder.LITTLE_ENDIAN).putLong(8, 999);
                s.getOutputStream().write(response(req, Protocol.FLAG_RESPONSE, new byte[0], 0));
                s.getOutputStream().flush();
                sleep(2000);
            } catch (IOException ignored) {
                // client went away
            }
        }))) {
            RpmpClient c = RpmpClient.connect("127.0.0.1", n.port(), quick());
            expect(expectError(c::ping) == Protocol.BAD_FRAME, "BAD_FRAME");
            c.close();
        }
    }

    @Test
    @DisplayName("a node closing the connection is an EOF, not a hang")
    void closedConnectionIsEof() throws Exception {
        try (FakeNode n = new FakeNode(afterHello(s -> {
            try {
                readFrame(s.getInputStream());
            } catch (IOException ignored) {
                // closing
            }
        }))) {
            RpmpClient c = RpmpClient.connect("127.0.0.1", n.port(), quick());
            try {
                c.ping();
                throw new AssertionError("ping answered");
            } catch (java.io.EOFException e) {
                expect(!c.isReusable(), "broken");
            }
            c.close();
        }
    }

    @Test
    @DisplayName("an error frame with invalid UTF-8 still decodes")
    void errorFrameWithInvalidUtf8Decodes() throws Exception {
        try (FakeNode n = new FakeNode(afterHello(s -> {
            try {
                byte[] req = readFrame(s.getInputStream());
                byte[] meta = new MetaWriter().u16(Protocol.POOL_FULL).u16(3).toByteArray();
                byte[] all = java.util.Arrays.copyOf(meta, meta.length + 3);
                all[meta.length] = (byte) 0xff;
                all[meta.length + 1] = 'o';
                all[meta.length + 2] = 'k';
                s.getOutputStream().write(response(req, Protocol.FLAG_RESPONSE | Protocol.FLAG_ERROR, all, 0));
                s.getOutputStream().flush();
                sleep(2000);
            } catch (IOException ignored) {
                // client went away
            }
        }))) {
            RpmpClient c = RpmpClient.connect("127.0.0.1", n.port(), quick());
            try {
                c.ping();
                throw new AssertionError("no error");
            } catch (RpmpException e) {
                expect(e.code() == Protocol.POOL_FULL && e.nodeMessage().endsWith("ok"), e.toString());
                expect(c.isReusable(), "a clean error frame keeps the connection");
            }
            c.close();
        }
    }

    @Test
    @DisplayName("a FETCH record failing its checksum fails that node's copy (a node that does not verify)")
    void corruptFetchRecordFailsThatCopy() throws Exception {
        byte[] good = new byte[100];
        try (FakeNode n = new FakeNode(afterHello(s -> {
            try {
                byte[] req = readFrame(s.getInputStream());
                // The final segment of attempt 7, its checksum off by one: what a flipped byte looks like.
                byte[] rec = new SegmentRecord(0, 7, Protocol.SEQ_LAST, Checksums.xxh3(good, 0, 100) + 1, good).encode();
                OutputStream out = s.getOutputStream();
                out.write(response(req, Protocol.FLAG_RESPONSE, new MetaWriter().u32(1).toByteArray(), rec.length));
                out.write(rec);
                out.flush();
                sleep(2000);
            } catch (IOException ignored) {
                // client went away
            }
        }))) {
            NodeInfo fake = new NodeInfo("127.0.0.1:" + n.port(), "127.0.0.1", n.port(), 1);
            ShuffleRef ref = new ShuffleRef("a", 1, 1, 1, new Placement(1, List.of(fake), 1, new short[] {0}));
            ConnectionPool pool = new ConnectionPool(quick());
            PartitionFetcher f = new PartitionFetcher(ref, pool, null, 0, 0, Protocol.END_MAP_ALL, Map.of(7L, 0));
            MissingDataException e = expectThrows(MissingDataException.class,
                () -> readAll(f));
            expect(e.getMessage().contains(fake.address() + ": corrupt copy: CHECKSUM_MISMATCH")
                && e.getCause() instanceof RpmpException, e.getMessage());
            pool.close();
        }
    }

    @ParameterizedTest(name = "quota: {0}")
    @ValueSource(booleans = {true, false})
    @DisplayName("a push refused for room (POOL_FULL, QUOTA_EXCEEDED) fails the map task naming shuffle, partition and node")
    void pushRefusedForRoomNamesShufflePartitionAndNode(boolean quota) throws Exception {
        int code = quota ? Protocol.QUOTA_EXCEEDED : Protocol.POOL_FULL;
        String said = quota ? "app 'a' would hold 1074790400 bytes on this node, above its quota of 1073741824"
            : "no room for 1048576 bytes after waiting 30 s";
        try (FakeNode n = new FakeNode(afterHello(s -> {
            try {
                byte[] req = readFrame(s.getInputStream());
                byte[] meta = new MetaWriter().u16(code).str(said).toByteArray();
                s.getOutputStream().write(response(req, Protocol.FLAG_RESPONSE | Protocol.FLAG_ERROR, meta, 0));
                s.getOutputStream().flush();
                sleep(3000);
            } catch (IOException ignored) {
                // client went away
            }
        }))) {
            NodeInfo fake = new NodeInfo("127.0.0.1:" + n.port(), "127.0.0.1", n.port(), 1);
            ShuffleRef ref = new ShuffleRef("a", 9, 4, 1, new Placement(1, List.of(fake), 1, new short[] {0, 0, 0, 0}));
            ConnectionPool pool = new ConnectionPool(quick());
            SegmentPusher pusher = new SegmentPusher(ref, pool, 5, 1234L, 3, 10);
            long t0 = System.nanoTime();
            RpmpException e = expectThrows(RpmpException.class, () -> {
                pusher.push(2, ByteBuffer.wrap(new byte[64]).limit(64), true);
                pusher.finish();
            });
            long ms = (System.nanoTime() - t0) / 1_000_000;
            String m = e.getMessage();
            expect(e.code() == code && m.startsWith(Protocol.errorName(code) + " from " + fake.address() + ": "), m);
            expect(m.contains("shuffle 9 map 5 (attempt 1234)") && m.contains("push of partition 2 seq 0+LAST: ")
                && m.contains("RPMP node " + fake.address()) && m.contains(said), m);
            expect(quota ? m.contains("--app-quota") : m.contains("no room left"), m);
            expect(ms < 1000, "not retried (" + ms + " ms): retrying the same node does not help");
            pusher.abort();
            pool.close();
        }
    }

    @Test
    @DisplayName("unknown error codes are kept as numbers")
    void unknownErrorCodesKept() throws Exception {
        RpmpException e = new RpmpException(77, "x", null);
        expect(e.code() == 77 && e.getMessage().contains("ERROR_77"), e.getMessage());
        expect(new String("é".getBytes(StandardCharsets.UTF_8), StandardCharsets.UTF_8).equals("é"), "utf8");
    }
}
