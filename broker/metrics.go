package broker

import (
	"fmt"
	"sync/atomic"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/mochi-mqtt/server/v2/system"
	"github.com/prometheus/client_golang/prometheus"
)

// metricsHook counts what network clients send and are sent: connections,
// publishes and acknowledgements (weir_mqtt_*). The bridge's inline client
// goes through neither hook call, so it is not counted. Connections now and
// messages dropped come from mochi's own counters (Server.Info).
type metricsHook struct {
	mqtt.HookBase

	connectionsTotal prometheus.Counter
	publishesInVec   *prometheus.CounterVec
	publishesOutVec  *prometheus.CounterVec
	acksInVec        *prometheus.CounterVec
	acksOutVec       *prometheus.CounterVec
	collectors       []prometheus.Collector // all of the above, and mochi's counters

	// The children, looked up once: the hook runs for every packet.
	publishesIn  [3]prometheus.Counter          // by QoS
	publishesOut [3]prometheus.Counter          // by QoS
	acksIn       map[byte]prometheus.Counter    // by packet type
	acksOut      map[byte][2]prometheus.Counter // by packet type; [0] success, [1] error
}

// ackTypes are the packets counted as acknowledgements, with their label.
var ackTypes = map[byte]string{packets.Puback: "puback", packets.Pubrec: "pubrec", packets.Pubcomp: "pubcomp"}

func newMetricsHook(info *system.Info) *metricsHook {
	h := &metricsHook{
		connectionsTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "weir_mqtt_connections_total",
			Help: "MQTT connections accepted (CONNACK success sent and session established).",
		}),
		publishesInVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_mqtt_publishes_received_total",
			Help: "PUBLISH packets received from MQTT clients, by QoS (stored or not: see weir_mqtt_ingest_publishes_total).",
		}, []string{"qos"}),
		publishesOutVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_mqtt_publishes_sent_total",
			Help: "PUBLISH packets written to MQTT clients (live subscriptions and $share groups), by QoS.",
		}, []string{"qos"}),
		acksInVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_mqtt_acks_received_total",
			Help: "Acknowledgements of deliveries received from MQTT clients: puback (QoS 1), pubrec and pubcomp (QoS 2).",
		}, []string{"packet"}),
		acksOutVec: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "weir_mqtt_acks_sent_total",
			Help: "Acknowledgements written to publishing MQTT clients: puback (QoS 1) and pubrec (QoS 2), sent once the publish committed or failed, and pubcomp; result is success or error (reason code 0x80 and above).",
		}, []string{"packet", "result"}),
		acksIn:  map[byte]prometheus.Counter{},
		acksOut: map[byte][2]prometheus.Counter{},
	}
	for q := range 3 {
		h.publishesIn[q] = h.publishesInVec.WithLabelValues(fmt.Sprint(q))
		h.publishesOut[q] = h.publishesOutVec.WithLabelValues(fmt.Sprint(q))
	}
	for t, name := range ackTypes {
		h.acksIn[t] = h.acksInVec.WithLabelValues(name)
		h.acksOut[t] = [2]prometheus.Counter{h.acksOutVec.WithLabelValues(name, "success"), h.acksOutVec.WithLabelValues(name, "error")}
	}
	load := func(p *int64) func() float64 { return func() float64 { return float64(atomic.LoadInt64(p)) } }
	h.collectors = []prometheus.Collector{
		h.connectionsTotal, h.publishesInVec, h.publishesOutVec, h.acksInVec, h.acksOutVec,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "weir_mqtt_connections",
			Help: "MQTT clients connected now.",
		}, load(&info.ClientsConnected)),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "weir_mqtt_subscriptions",
			Help: "MQTT subscriptions (topic filters of connected and persistent sessions) the broker holds.",
		}, load(&info.Subscriptions)),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "weir_mqtt_received_bytes_total",
			Help: "Bytes read from MQTT connections.",
		}, load(&info.BytesReceived)),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "weir_mqtt_sent_bytes_total",
			Help: "Bytes written to MQTT connections.",
		}, load(&info.BytesSent)),
	}
	for _, d := range []struct {
		reason string
		count  *int64
	}{{"outbound_queue_full", &info.MessagesDropped}, {"inflight_full", &info.InflightDropped}} {
		h.collectors = append(h.collectors, prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "weir_mqtt_dropped_total",
			Help:        "Messages the broker dropped instead of delivering: outbound_queue_full (the subscriber's write queue was full: a slow subscriber), inflight_full (its QoS 1/2 in-flight window, mqtt.max-inflight, was full).",
			ConstLabels: prometheus.Labels{"reason": d.reason},
		}, load(d.count)))
	}
	return h
}

func (h *metricsHook) register(r prometheus.Registerer) error {
	for _, c := range h.collectors {
		if err := r.Register(c); err != nil {
			return fmt.Errorf("broker: registering metrics: %w", err)
		}
	}
	return nil
}

// ID implements mqtt.Hook.
func (h *metricsHook) ID() string { return "weir-metrics" }

// Provides implements mqtt.Hook.
func (h *metricsHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnSessionEstablished, mqtt.OnPacketRead, mqtt.OnPacketSent:
		return true
	}
	return false
}

// OnSessionEstablished counts a connection.
func (h *metricsHook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	h.connectionsTotal.Inc()
}

// OnPacketRead counts publishes and acks from clients; it changes nothing.
func (h *metricsHook) OnPacketRead(_ *mqtt.Client, pk packets.Packet) (packets.Packet, error) {
	switch t := pk.FixedHeader.Type; t {
	case packets.Publish:
		h.publishesIn[min(pk.FixedHeader.Qos, 2)].Inc()
	case packets.Puback, packets.Pubrec, packets.Pubcomp:
		h.acksIn[t].Inc()
	}
	return pk, nil
}

// OnPacketSent counts publishes and acks written to clients.
func (h *metricsHook) OnPacketSent(_ *mqtt.Client, pk packets.Packet, _ []byte) {
	switch t := pk.FixedHeader.Type; t {
	case packets.Publish:
		h.publishesOut[min(pk.FixedHeader.Qos, 2)].Inc()
	case packets.Puback, packets.Pubrec, packets.Pubcomp:
		i := 0
		if pk.ReasonCode >= packets.ErrUnspecifiedError.Code {
			i = 1
		}
		h.acksOut[t][i].Inc()
	}
}
