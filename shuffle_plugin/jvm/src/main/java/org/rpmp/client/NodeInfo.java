package org.rpmp.client;

import java.io.Serializable;

/** A cluster member as the wire carries it: {@code str node_id, str host, u16 port, u8 state}. */
public record NodeInfo(String id, String host, int port, int state) implements Serializable {
    public static final int ALIVE = Protocol.STATE_ALIVE;
    public static final int SUSPECT = Protocol.STATE_SUSPECT;
    public static final int DEAD = Protocol.STATE_DEAD;
    /** Up and serving what it holds, but taking no new shuffles (DRAIN). */
    public static final int DRAINING = Protocol.STATE_DRAINING;

    public String address() { return host + ":" + port; }

    static NodeInfo read(MetaReader r) throws RpmpException {
        String id = r.str("node_id");
        String host = r.str("host");
        int port = r.u16("port");
        int state = r.u8("state");
        return new NodeInfo(id, host, port, state);
    }

    void write(MetaWriter w) {
        w.str(id).str(host).u16(port).u8(state);
    }

    @Override
    public String toString() { return id + "@" + address() + "/" + state; }
}
