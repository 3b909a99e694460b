package org.rpmp.client;

import java.io.Closeable;
import java.io.IOException;
import java.nio.ByteBuffer;

/**
 * The byte stream under an RpmpClient: plain TCP (PlainTransport) or TLS (TlsTransport). Every wait is bounded
 * by the connection's read timeout, so a silent node cannot hang a task whichever transport carries it.
 */
interface Transport extends Closeable {
    /** Reads what has arrived into dst, waiting up to the read timeout for at least one byte; -1 at end of stream. */
    int read(ByteBuffer dst) throws IOException;

    /** Reads what has arrived into dst without waiting: 0 when nothing has, -1 at end of stream
     * (the check of an idle pooled connection). */
    int readNow(ByteBuffer dst) throws IOException;

    /** Writes every remaining byte of srcs, in order (one gathering write where the transport can). */
    void write(ByteBuffer... srcs) throws IOException;

    /** Nanoseconds spent blocked waiting for the network so far. */
    long ioWaitNanos();

    @Override
    void close();
}
