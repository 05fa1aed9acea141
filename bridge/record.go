package bridge

import (
	"encoding/base64"
	"encoding/json"
	"strconv"
	"unicode/utf8"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/weir-log/weir/api/hstreampb"
)

// The attributes of a record made from an MQTT publish. The payload is the
// record's (RAW) payload and the route's key its key; everything else the
// publish carried is here, so a consumer over gRPC sees it and an MQTT
// subscriber gets it back.
const (
	AttrTopic    = "mqtt.topic"    // the topic published to
	AttrQoS      = "mqtt.qos"      // "0", "1" or "2"
	AttrRetain   = "mqtt.retain"   // "true" when the retain flag was set; absent otherwise
	AttrClientID = "mqtt.clientid" // the publisher's client ID
	AttrUsername = "mqtt.username" // the publisher's username; absent when it had none
	// AttrConnector names the ingest connector (connectors.ingest) that
	// received the message from an external broker; mqtt.clientid is then
	// the connector's client ID. Absent for the embedded broker's publishes.
	AttrConnector = "mqtt.connector"

	// MQTT 5 properties, each absent when the publish did not carry it.
	AttrContentType     = "mqtt.content-type"
	AttrResponseTopic   = "mqtt.response-topic"
	AttrCorrelationData = "mqtt.correlation-data" // standard base64 (binary data)
	AttrPayloadFormat   = "mqtt.payload-format"   // "0" (bytes) or "1" (UTF-8)
	AttrMessageExpiry   = "mqtt.message-expiry"   // seconds, as published
	AttrUserProperties  = "mqtt.user-properties"  // JSON array of [name, value] pairs, in order (names may repeat)
)

// NewRecord returns the RAW record a publish by cl is stored as, keyed by
// key. Topics, client IDs, usernames and MQTT 5 string properties are
// UTF-8 by the MQTT spec (mochi checks), as record attributes must be; a
// client ID or username that is not valid UTF-8 is left out.
func NewRecord(cl *mqtt.Client, pk packets.Packet, key string) *hstreampb.HStreamRecord {
	attrs := map[string]string{
		AttrTopic: pk.TopicName,
		AttrQoS:   strconv.Itoa(int(pk.FixedHeader.Qos)),
	}
	if pk.FixedHeader.Retain {
		attrs[AttrRetain] = "true"
	}
	if cl != nil {
		setUTF8(attrs, AttrClientID, cl.ID)
		setUTF8(attrs, AttrUsername, string(cl.Properties.Username))
	}
	p := pk.Properties
	setUTF8(attrs, AttrContentType, p.ContentType)
	setUTF8(attrs, AttrResponseTopic, p.ResponseTopic)
	if len(p.CorrelationData) > 0 {
		attrs[AttrCorrelationData] = base64.StdEncoding.EncodeToString(p.CorrelationData)
	}
	if p.PayloadFormatFlag {
		attrs[AttrPayloadFormat] = strconv.Itoa(int(p.PayloadFormat))
	}
	if p.MessageExpiryInterval > 0 {
		attrs[AttrMessageExpiry] = strconv.FormatUint(uint64(p.MessageExpiryInterval), 10)
	}
	if len(p.User) > 0 {
		pairs := make([][2]string, len(p.User))
		for i, u := range p.User {
			pairs[i] = [2]string{u.Key, u.Val}
		}
		if b, err := json.Marshal(pairs); err == nil && utf8.Valid(b) {
			attrs[AttrUserProperties] = string(b)
		}
	}
	return &hstreampb.HStreamRecord{
		Header: &hstreampb.HStreamRecordHeader{
			Flag:       hstreampb.HStreamRecordHeader_RAW,
			Key:        key,
			Attributes: attrs,
		},
		Payload: pk.Payload,
	}
}

func setUTF8(attrs map[string]string, name, value string) {
	if value != "" && utf8.ValidString(value) {
		attrs[name] = value
	}
}

// PublishPacket returns the PUBLISH that delivers rec, a record of stream,
// to an MQTT subscriber: its topic is the record's mqtt.topic attribute, or
// the stream's name for a record appended without one (over gRPC), its
// payload the record's, and its MQTT 5 properties those NewRecord kept.
// The caller sets the QoS and packet ID. A record that is not RAW (JSON,
// from a gRPC producer) is delivered with its payload as stored.
func PublishPacket(rec *hstreampb.HStreamRecord, stream string) packets.Packet {
	attrs := rec.GetHeader().GetAttributes()
	topic := attrs[AttrTopic]
	if topic == "" {
		topic = stream
	}
	pk := packets.Packet{
		FixedHeader: packets.FixedHeader{Type: packets.Publish},
		TopicName:   topic,
		Payload:     rec.GetPayload(),
	}
	p := &pk.Properties
	p.ContentType = attrs[AttrContentType]
	p.ResponseTopic = attrs[AttrResponseTopic]
	if cd, ok := attrs[AttrCorrelationData]; ok {
		if b, err := base64.StdEncoding.DecodeString(cd); err == nil {
			p.CorrelationData = b
		}
	}
	if pf, ok := attrs[AttrPayloadFormat]; ok {
		if n, err := strconv.ParseUint(pf, 10, 8); err == nil {
			p.PayloadFormat, p.PayloadFormatFlag = byte(n), true
		}
	}
	if up, ok := attrs[AttrUserProperties]; ok {
		var pairs [][2]string
		if json.Unmarshal([]byte(up), &pairs) == nil {
			for _, kv := range pairs {
				p.User = append(p.User, packets.UserProperty{Key: kv[0], Val: kv[1]})
			}
		}
	}
	return pk
}
