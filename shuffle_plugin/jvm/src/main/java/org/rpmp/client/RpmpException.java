package org.rpmp.client;

import java.io.IOException;

/**
 * An error from an RPMP node (an error frame: {@code code} and the node's message) or a protocol violation
 * the client detected itself (a bad frame from the node: code BAD_FRAME / TOO_LARGE, node message null).
 */
public class RpmpException extends IOException {
    private static final long serialVersionUID = 1L;

    private final int code;
    private final String nodeMessage;
    private final String node;

    public RpmpException(int code, String nodeMessage, String node) {
        super(Protocol.errorName(code) + (node != null ? " from " + node : "") + ": " + nodeMessage);
        this.code = code;
        this.nodeMessage = nodeMessage;
        this.node = node;
    }

    /** The protocol error code (Protocol.BAD_FRAME ... Protocol.CORRUPT, or a newer node's code). */
    public int code() { return code; }

    /** The message the node sent (or the client's own description of a bad frame). */
    public String nodeMessage() { return nodeMessage; }

    /** host:port of the node, when known. */
    public String node() { return node; }
}
