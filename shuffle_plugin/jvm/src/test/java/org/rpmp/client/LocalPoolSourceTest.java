package org.rpmp.client;

import static org.rpmp.client.TestSupport.*;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.atomic.AtomicInteger;

import org.junit.jupiter.api.DisplayName;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The one-sided reader with no node: a pool-like file and spill-like files holding records in the record
 * format (written by the client's own encoder), named by a PARTITION_INFO answer built by the client's own
 * meta writer. Each block must be read from the file its index names; a file that cannot be opened means
 * FETCH from the node instead.
 */
class LocalPoolSourceTest {
    private static final long ATTEMPT = 77;
    private final Random rnd = new Random(7);

    @TempDir
    Path dir;

    /** A block of PARTITION_INFO: where it is and which file holds it (0 the pool file, k spill file k). */
    private record Blk(long address, long offset, long used, boolean sealed, int file) {}

    private static byte[] info(String pool, List<Blk> blocks, List<String> spill) {
        MetaWriter w = new MetaWriter().str(pool).u32(0).u64(0).u32(blocks.size());
        for (Blk b : blocks) w.u64(b.address()).u64(b.offset()).u64(b.used()).u8(b.sealed() ? 1 : 0).u16(b.file());
        w.u32(spill.size());
        for (String s : spill) w.str(s);
        return w.toByteArray();
    }

    private SegmentRecord record(int seq, boolean last) {
        byte[] p = payload(rnd, 100 + rnd.nextInt(3000));
        return new SegmentRecord(4, ATTEMPT, last ? seq | Protocol.SEQ_LAST : seq, Checksums.xxh3(p, 0, p.length), p);
    }

    /** Writes the records back to back at offset into a file of size bytes (garbage around them); returns the block. */
    private Blk write(Path file, long size, long offset, int fileIndex, List<SegmentRecord> recs) throws IOException {
        ByteBuffer all = ByteBuffer.allocate((int) size).order(ByteOrder.LITTLE_ENDIAN);
        byte[] noise = payload(rnd, (int) size);
        all.put(noise).position((int) offset);
        for (SegmentRecord r : recs) all.put(r.encode());
        long used = all.position() - offset;
        Files.write(file, all.array());
        return new Blk(0x1000 + offset + fileIndex * 0x100000L, offset, used, fileIndex > 0, fileIndex);
    }

    private static List<SegmentRecord> readAll(RecordSource src) throws IOException {
        List<SegmentRecord> out = new ArrayList<>();
        for (SegmentRecord.Header h = src.nextHeader(); h != null; h = src.nextHeader()) {
            out.add(new SegmentRecord(h.mapIndex(), h.attempt(), h.seq(), h.checksum(), src.payload()));
        }
        expect(src.completed(), "the source completed");
        return out;
    }

    private static void sameRecords(List<SegmentRecord> want, List<SegmentRecord> got) {
        expect(want.size() == got.size(), got.size() + " records, expected " + want.size());
        for (int i = 0; i < want.size(); i++) {
            SegmentRecord w = want.get(i);
            SegmentRecord g = got.get(i);
            expect(w.attempt() == g.attempt() && w.seq() == g.seq() && w.checksum() == g.checksum()
                && java.util.Arrays.equals(w.payload(), g.payload()) && g.checksumOk(), "record " + i + ": " + g);
        }
    }

    /** Pool file: one block of 2 records at 1000; spill 2: one block at 8192; spill 1: one block at 0. */
    private final List<SegmentRecord> inPool = new ArrayList<>();
    private final List<SegmentRecord> inSpill2 = new ArrayList<>();
    private final List<SegmentRecord> inSpill1 = new ArrayList<>();

    private Responses.PartitionInfo layOut(Path pool, Path spill1, Path spill2) throws IOException {
        inPool.add(record(0, false));
        inPool.add(record(1, false));
        inSpill2.add(record(2, false));
        inSpill2.add(record(3, false));
        inSpill1.add(record(4, true));
        List<Blk> blocks = List.of(write(pool, 16384, 1000, 0, inPool), write(spill2, 20480, 8192, 2, inSpill2),
            write(spill1, 8192, 0, 1, inSpill1));
        byte[] meta = info(pool.toString(), blocks, List.of(spill1.toString(), spill2.toString()));
        return Responses.partitionInfo(new MetaReader(meta, "fake:1"));
    }

    private List<SegmentRecord> expected() {
        List<SegmentRecord> all = new ArrayList<>(inPool);
        all.addAll(inSpill2);
        all.addAll(inSpill1);
        return all;
    }

    @Test
    @DisplayName("each block is read from the file its index names: the pool file or a spill file")
    void readsBlocksFromPoolAndSpillFiles() throws Exception {
        Responses.PartitionInfo info = layOut(dir.resolve("node.pool"), dir.resolve("a.spill"), dir.resolve("b.spill"));
        expect(info.spillFiles().size() == 2 && info.blocks().get(1)[Responses.PartitionInfo.FILE] == 2, "parsed");
        expect(info.files().get(2).endsWith("b.spill"), "file 2 is the second spill file: " + info.files());
        LocalPools pools = new LocalPools();
        try {
            LocalPoolSource src = LocalPoolSource.open(pools, info, "fake:1");
            expect(src != null, "all three files open");
            expect(src.address().equals("fake:1 (pool and spill files)"), src.address());
            sameRecords(expected(), readAll(src));
            expect(pools.openFiles() == 3, pools.openFiles() + " files cached");
            // cached: a second reader gets the same channels
            LocalPoolSource again = LocalPoolSource.open(pools, info, "fake:1");
            sameRecords(expected(), readAll(again));
            expect(pools.openFiles() == 3, "still 3 files cached");
        } finally {
            pools.close();
        }
    }

    @Test
    @DisplayName("a spill file that cannot be opened: no local source (the reader FETCHes)")
    void unreadableSpillFileMeansNoLocalSource() throws Exception {
        Responses.PartitionInfo info = layOut(dir.resolve("node.pool"), dir.resolve("a.spill"), dir.resolve("b.spill"));
        Files.delete(dir.resolve("b.spill"));
        LocalPools pools = new LocalPools();
        try {
            expect(LocalPoolSource.open(pools, info, "fake:1") == null, "no source without spill file 2");
            expect(pools.open(info.poolPath()) != null, "the pool file itself stays usable");
        } finally {
            pools.close();
        }
    }

    @Test
    @DisplayName("a block outside its file fails the source, naming the file")
    void blockOutsideItsFile() throws Exception {
        Path pool = dir.resolve("node.pool");
        Path spill = dir.resolve("a.spill");
        Blk inPoolBlk = write(pool, 8192, 0, 0, List.of(record(0, true)));
        write(spill, 4096, 0, 1, List.of());
        // a block that fits the pool file but not the (smaller) spill file it is said to be in
        Blk wrong = new Blk(0x9000, 4096, 2048, true, 1);
        byte[] meta = info(pool.toString(), List.of(inPoolBlk, wrong), List.of(spill.toString()));
        Responses.PartitionInfo info = Responses.partitionInfo(new MetaReader(meta, "fake:1"));
        LocalPools pools = new LocalPools();
        try {
            RpmpException e = expectThrows(RpmpException.class, () -> LocalPoolSource.open(pools, info, "fake:1"));
            expect(e.getMessage().contains("outside " + spill), e.getMessage());
        } finally {
            pools.close();
        }
    }

    @Test
    @DisplayName("PARTITION_INFO naming a file beyond its list, or an unsealed spilled block, is a BAD_FRAME")
    void fileIndexBeyondTheList() throws Exception {
        byte[] beyond = info("/p", List.of(new Blk(1, 0, 0, true, 0), new Blk(2, 0, 0, true, 3)), List.of("/s1", "/s2"));
        RpmpException e = expectThrows(RpmpException.class, () -> Responses.partitionInfo(new MetaReader(beyond, "n:1")));
        expect(e.code() == Protocol.BAD_FRAME && e.getMessage().contains("blocks[1].file is 3, but the response lists 2"
            + " spill files"), e.getMessage());
        byte[] unsealed = info("/p", List.of(new Blk(1, 0, 0, false, 1)), List.of("/s1"));
        e = expectThrows(RpmpException.class, () -> Responses.partitionInfo(new MetaReader(unsealed, "n:1")));
        expect(e.code() == Protocol.BAD_FRAME && e.getMessage().contains("not sealed"), e.getMessage());
        byte[] cut = info("/p", List.of(), List.of("/s1"));
        e = expectThrows(RpmpException.class, () -> Responses.partitionInfo(
            new MetaReader(java.util.Arrays.copyOf(cut, cut.length - 1), "n:1")));
        expect(e.code() == Protocol.BAD_FRAME, e.getMessage());
    }

    @Test
    @DisplayName("a cached spill file that was deleted and made anew is closed and opened again")
    void replacedFileIsReopened() throws Exception {
        Path spill = dir.resolve("c.spill");
        Files.write(spill, new byte[] {1, 2, 3});
        LocalPools pools = new LocalPools();
        try {
            FileChannel old = pools.open(spill.toString());
            expect(old != null && pools.open(spill.toString()) == old, "cached");
            Files.delete(spill);
            Files.write(spill, new byte[] {9, 9, 9, 9});
            pools.dropStale();
            expect(!old.isOpen(), "the channel of the deleted file is closed");
            FileChannel now = pools.open(spill.toString());
            expect(now != null && now != old && now.size() == 4, "the new file is opened");
            Files.delete(spill);
            pools.dropStale();
            expect(!now.isOpen() && pools.openFiles() == 0, "a deleted file is not kept open");
        } finally {
            pools.close();
        }
    }

    @Test
    @DisplayName("PartitionFetcher: spilled blocks read locally; an unreadable spill file falls back to FETCH")
    void fetcherReadsSpillFilesOrFetches() throws Exception {
        Path pool = dir.resolve("node.pool");
        Path spill1 = dir.resolve("a.spill");
        Path spill2 = dir.resolve("b.spill");
        Responses.PartitionInfo info = layOut(pool, spill1, spill2);
        MetaWriter w = new MetaWriter().str(info.poolPath()).u32(0).u64(0).u32(info.blocks().size());
        for (long[] b : info.blocks()) w.u64(b[0]).u64(b[1]).u64(b[2]).u8((int) b[3]).u16((int) b[4]);
        w.u32(info.spillFiles().size());
        for (String s : info.spillFiles()) w.str(s);
        byte[] infoMeta = w.toByteArray();
        ByteBuffer records = ByteBuffer.allocate(1 << 16);
        for (SegmentRecord r : expected()) records.put(r.encode());
        byte[] fetchData = java.util.Arrays.copyOf(records.array(), records.position());

        for (boolean spillReadable : new boolean[] {true, false}) {
            if (!spillReadable) Files.delete(spill2);
            AtomicInteger fetches = new AtomicInteger();
            try (FakeNode n = new FakeNode(afterHello(s -> serve(s, infoMeta, fetchData, expected().size(), fetches)));
                 LocalPoolsCloser pools = new LocalPoolsCloser()) {
                NodeInfo node = new NodeInfo("127.0.0.1:" + n.port(), "127.0.0.1", n.port(), NodeInfo.ALIVE);
                Placement placement = new Placement(1, List.of(node), 1, new short[] {0});
                ShuffleRef ref = new ShuffleRef("app", 3, 1, 1, placement);
                ConnectionPool cp = new ConnectionPool(quick());
                try {
                    PartitionFetcher f = fetcher(ref, cp, pools.pools, 0, Map.of(ATTEMPT, 4));
                    Map<String, byte[]> got = new HashMap<>();
                    boolean local = false;
                    for (SegmentRecord r = f.next(); r != null; r = f.next()) {
                        expect(got.put(r.attempt() + "/" + Protocol.seqIndex(r.seq()), r.payload()) == null, "dup " + r);
                        local |= f.lastWasLocal();
                    }
                    expect(got.size() == expected().size(), got.size() + " records");
                    for (SegmentRecord r : expected()) {
                        expect(java.util.Arrays.equals(r.payload(), got.get(r.attempt() + "/" + Protocol.seqIndex(r.seq()))),
                            "payload of " + r);
                    }
                    expect(local == spillReadable && fetches.get() == (spillReadable ? 0 : 1),
                        "spill file readable " + spillReadable + ": local " + local + ", " + fetches.get() + " FETCHes; "
                        + f.outcomes());
                } finally {
                    cp.close();
                }
            }
        }
    }

    private static final class LocalPoolsCloser implements AutoCloseable {
        final LocalPools pools = new LocalPools();

        @Override
        public void close() { pools.close(); }
    }

    /** A node that answers PARTITION_INFO with infoMeta and FETCH with every record in one frame. */
    private static void serve(java.net.Socket s, byte[] infoMeta, byte[] fetchData, int records, AtomicInteger fetches) {
        try {
            InputStream in = s.getInputStream();
            OutputStream out = s.getOutputStream();
            while (true) {
                byte[] req = readFrame(in);
                if (req.length < Protocol.HEADER_SIZE) return;
                int op = req[5] & 0xFF;
                if (op == Protocol.OP_PARTITION_INFO) {
                    out.write(response(req, Protocol.FLAG_RESPONSE, infoMeta, 0));
                } else if (op == Protocol.OP_FETCH) {
                    fetches.incrementAndGet();
                    out.write(response(req, Protocol.FLAG_RESPONSE, new MetaWriter().u32(records).toByteArray(),
                        fetchData.length));
                    out.write(fetchData);
                } else {
                    out.write(response(req, Protocol.FLAG_RESPONSE | Protocol.FLAG_ERROR,
                        new MetaWriter().u16(Protocol.BAD_REQUEST).str("unexpected").toByteArray(), 0));
                }
                out.flush();
            }
        } catch (IOException | IndexOutOfBoundsException ignored) {
            // the client went away (readFrame of a closed stream)
        }
    }
}
