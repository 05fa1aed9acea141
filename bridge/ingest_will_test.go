package bridge_test

import (
	"bufio"
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/bridge"
)

// A client's will is stored when the broker sends it (the connection drops
// without DISCONNECT): mochi sends wills without OnPublish, so the ingest
// hook takes it in OnWillSent.
func TestIngestStoresWills(t *testing.T) {
	r := startRig(t)
	conn, err := net.DialTimeout("tcp", r.addr, waitFor)
	require.NoError(t, err)
	connect := packets.Packet{
		FixedHeader:     packets.FixedHeader{Type: packets.Connect},
		ProtocolVersion: 4,
		Connect: packets.ConnectParams{
			ProtocolName:     []byte("MQTT"),
			Clean:            true,
			Keepalive:        30,
			ClientIdentifier: "dev-will",
			WillFlag:         true,
			WillTopic:        "dev/dev-will/status",
			WillPayload:      []byte("offline"),
			WillQos:          1,
		},
	}
	var buf bytes.Buffer
	require.NoError(t, connect.ConnectEncode(&buf))
	_, err = conn.Write(buf.Bytes())
	require.NoError(t, err)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(waitFor)))
	fh := make([]byte, 4)
	_, err = bufio.NewReader(conn).Read(fh)
	require.NoError(t, err)
	require.Equal(t, byte(packets.Connack<<4), fh[0], "CONNACK")
	conn.Close() // no DISCONNECT: the broker sends the will

	var recs []*hstreampb.HStreamRecord
	deadline := time.Now().Add(waitFor)
	for len(recs) == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		if streamReady(r, "devs") { // created for the will's append
			recs = r.records(t, "devs")
		}
	}
	require.Len(t, recs, 1, "the will was not stored")
	rec := recs[0]
	assert.Equal(t, "offline", string(rec.Payload))
	assert.Equal(t, "dev-will", rec.Header.Key)
	assert.Equal(t, "dev/dev-will/status", rec.Header.Attributes[bridge.AttrTopic])
}

// streamReady reports whether stream exists with every shard hosted here.
func streamReady(r *rig, stream string) bool {
	shards, err := r.n.Server.Node().StreamShards(stream)
	if err != nil {
		return false
	}
	for _, m := range shards {
		if _, err := r.n.Server.Node().Shard(m.ID); err != nil {
			return false
		}
	}
	return true
}
