package org.rpmp.shuffle;

import java.io.Serializable;
import java.util.Objects;

/** A cluster member as the wire carries it: {@code str node_id, str host, u16 port, u8 state}. */
public final class NodeInfo implements Serializable {
    private static final long serialVersionUID = 1L;

    public static final int ALIVE = Protocol.STATE_ALIVE;
    public static final int SUSPECT = Protocol.STATE_SUSPECT;
    public static final int DEAD = Protocol.STATE_DEAD;

    public final String id;
    public final String host;
    public final int port;
    public final int state;

    public NodeInfo(String id, String host, int port, int state) {
        this.id = id;
        this.host = host;
        this.port = port;
        this.state = state;
    }

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
    public boolean equals(Object o) {
        if (!(o instanceof NodeInfo)) return false;
        NodeInfo n = (NodeInfo) o;
        return id.equals(n.id) && host.equals(n.host) && port == n.port && state == n.state;
    }

    @Override
    public int hashCode() { return Objects.hash(id, host, port, state); }

    @Override
    public String toString() { return id + "@" + address() + "/" + state; }
}
