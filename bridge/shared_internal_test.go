package bridge

import (
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/require"

	"github.com/weir-log/weir/api/hstreampb"
)

// After mochi's packet-ID counter comes round, a delivery never gets the ID
// of one still awaiting its PUBACK whose Inflight entry mochi dropped (an
// inbound PUBLISH with the same ID deletes it): it would overwrite it.
func TestSharedTrackSkipsPendingIDs(t *testing.T) {
	srv := mqtt.New(nil)
	cl := srv.NewClient(nil, "t", "dev", false)
	c := newConn(cl, 4, 0)
	m := &member{c: c}
	var info int64
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, TopicName: "a"}
	c.slots <- struct{}{}
	require.NoError(t, c.track(m, &pk, &hstreampb.RecordId{BatchIndex: 1}, &info))
	first := pk.PacketID
	require.True(t, cl.State.Inflight.Delete(first))
	for range 65534 {
		_, err := cl.NextPacketID()
		require.NoError(t, err)
	}
	c.slots <- struct{}{}
	require.NoError(t, c.track(m, &pk, &hstreampb.RecordId{BatchIndex: 2}, &info))
	require.NotEqual(t, first, pk.PacketID)
	require.Len(t, c.pending, 2)
	require.EqualValues(t, 1, c.pending[first].id.GetBatchIndex())
}
