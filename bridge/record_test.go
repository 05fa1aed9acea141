package bridge

import (
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/stretchr/testify/assert"

	"github.com/weir-log/weir/api/hstreampb"
)

func TestRecordRoundTrip(t *testing.T) {
	cl := &mqtt.Client{ID: "dev1"}
	cl.Properties.Username = []byte("alice")
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 2, Retain: true},
		TopicName:   "sensors/dev1/temp",
		Payload:     []byte{0, 1, 0xff},
		Properties: packets.Properties{
			ContentType:           "application/octet-stream",
			ResponseTopic:         "replies/dev1",
			CorrelationData:       []byte{0xde, 0xad},
			PayloadFormat:         0,
			PayloadFormatFlag:     true,
			MessageExpiryInterval: 60,
			User:                  []packets.UserProperty{{Key: "a", Val: "1"}, {Key: "a", Val: "2"}, {Key: "b", Val: ""}},
		},
	}
	rec := NewRecord(cl, pk, "dev1")
	assert.Equal(t, hstreampb.HStreamRecordHeader_RAW, rec.Header.Flag)
	assert.Equal(t, "dev1", rec.Header.Key)
	assert.Equal(t, pk.Payload, rec.Payload)
	assert.Equal(t, map[string]string{
		AttrTopic:           "sensors/dev1/temp",
		AttrQoS:             "2",
		AttrRetain:          "true",
		AttrClientID:        "dev1",
		AttrUsername:        "alice",
		AttrContentType:     "application/octet-stream",
		AttrResponseTopic:   "replies/dev1",
		AttrCorrelationData: "3q0=",
		AttrPayloadFormat:   "0",
		AttrMessageExpiry:   "60",
		AttrUserProperties:  `[["a","1"],["a","2"],["b",""]]`,
	}, rec.Header.Attributes)

	back := PublishPacket(rec, "sensors")
	assert.Equal(t, pk.TopicName, back.TopicName)
	assert.Equal(t, pk.Payload, back.Payload)
	assert.Equal(t, packets.Publish, back.FixedHeader.Type)
	assert.Equal(t, pk.Properties.ContentType, back.Properties.ContentType)
	assert.Equal(t, pk.Properties.ResponseTopic, back.Properties.ResponseTopic)
	assert.Equal(t, pk.Properties.CorrelationData, back.Properties.CorrelationData)
	assert.True(t, back.Properties.PayloadFormatFlag)
	assert.Equal(t, pk.Properties.User, back.Properties.User)
}

func TestRecordMinimal(t *testing.T) {
	// An anonymous MQTT 3.1.1 QoS 0 publish: only topic, QoS and client ID.
	rec := NewRecord(&mqtt.Client{ID: "c"}, packets.Packet{TopicName: "t", Payload: []byte("x")}, "k")
	assert.Equal(t, map[string]string{AttrTopic: "t", AttrQoS: "0", AttrClientID: "c"}, rec.Header.Attributes)

	// A record appended over gRPC, without a topic: delivered on the
	// stream's name, nothing else made up.
	pk := PublishPacket(&hstreampb.HStreamRecord{Payload: []byte("y")}, "sensors")
	assert.Equal(t, "sensors", pk.TopicName)
	assert.Equal(t, []byte("y"), pk.Payload)
	assert.Equal(t, packets.Properties{}, pk.Properties)
}
