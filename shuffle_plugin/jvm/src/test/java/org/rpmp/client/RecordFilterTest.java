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

/** The reader's completeness rule (PROTOCOL.md "Completeness"). */
@SuppressWarnings({"unused", "resource"})
class RecordFilterTest {
    @Test
    @DisplayName("RecordFilter: complete only with 0..n-1 and SEQ_LAST on n-1")
    void completeOnlyWithAllIndicesAndTheFinalOne() throws Exception {
        int last = Protocol.SEQ_LAST;
        RecordFilter f = new RecordFilter(Map.of(1L, 0, 2L, 0), 0, Protocol.END_MAP_ALL);
        expect(!f.isComplete(1) && f.describe(1).contains("no segment"), f.describe(1));
        f.accept(rec(1, 1, 5));
        f.accept(rec(1, 0, 5));
        expect(!f.isComplete(1) && f.describe(1).contains("lost tail"), "no final segment yet: " + f.describe(1));
        expect(!f.accept(rec(1, 0, 5)), "a duplicate is dropped");
        f.accept(rec(1, 2 | last, 0));
        expect(f.isComplete(1) && !f.hasGaps(1) && f.segmentsOf(1) == 3, "complete: " + f.describe(1));
        RecordFilter g = new RecordFilter(Map.of(1L, 0), 0, Protocol.END_MAP_ALL);
        g.accept(rec(1, 0, 5));
        g.accept(rec(1, 2 | last, 5));
        expect(!g.isComplete(1) && g.hasGaps(1) && g.describe(1).contains("holes"), "a hole: " + g.describe(1));
        RecordFilter h = new RecordFilter(Map.of(1L, 0), 0, Protocol.END_MAP_ALL);
        h.accept(rec(1, 0 | last, 5));
        h.accept(rec(1, 1, 5));
        expect(!h.isComplete(1) && h.describe(1).contains("not the highest"), "a segment after the final one: "
            + h.describe(1));
        RecordFilter k = new RecordFilter(Map.of(1L, 0), 0, Protocol.END_MAP_ALL);
        k.accept(rec(1, 0 | last, 5));
        expect(k.isComplete(1), "one final segment alone is complete");
        expect(k.accept(rec(1, 0, 5)) && !k.isComplete(1), "index 0 twice (with and without the flag) is not");
        expect(Protocol.errorName(Protocol.CORRUPT).equals("CORRUPT") && Protocol.CORRUPT == 13, "CORRUPT = 13");
        expect(Protocol.seqIndex(5 | last) == 5 && Protocol.isLast(5 | last) && !Protocol.isLast(5), "seq bits");
    }
}
