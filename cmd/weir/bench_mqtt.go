package main

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/spf13/cobra"

	"github.com/weir-log/weir/internal/bench"
	"github.com/weir-log/weir/internal/mqttbench"
)

func newBenchMQTTCmd() *cobra.Command {
	var (
		o       mqttbench.Options
		qos     int
		out     benchOutput
		count   int64
		version int
	)
	cmd := &cobra.Command{
		Use:   "mqtt",
		Short: "Publish to an MQTT broker from many clients and time each acknowledgement",
		Long: `Connect --clients MQTT clients (MQTT 3.1.1 or 5, --mqtt-version) to any
broker at --mqtt-addr, then have client i publish --payload bytes to topic
--topic (a pattern given i, e.g. bench/%d) with at most --window publishes
unacknowledged, for --duration or until --count publishes in all, at --rate
publishes a second in all (0: as fast as acknowledgements allow).

A publish's latency runs from the publish call to its PUBACK (QoS 1) or
PUBCOMP (QoS 2). QoS 0 has no acknowledgement: publishes are counted once
written, and the report has no latencies. The report counts acknowledged
publishes; failed ones (refused, connection lost) are errors.

With weir's default routing the first topic level names the stream, so
bench/%d lands in stream "bench" (created on first use).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, _, err := net.SplitHostPort(o.Addr); err != nil {
				return fmt.Errorf("--mqtt-addr %q: want host:port", o.Addr)
			}
			if qos < 0 || qos > 2 {
				return fmt.Errorf("--qos %d: want 0, 1 or 2", qos)
			}
			if version != 3 && version != 5 {
				return fmt.Errorf("--mqtt-version %d: want 3 (3.1.1) or 5", version)
			}
			if o.Clients < 1 || o.Window < 1 {
				return fmt.Errorf("--clients %d, --window %d: want at least 1", o.Clients, o.Window)
			}
			if o.PayloadBytes < 0 || o.Rate < 0 {
				return fmt.Errorf("--payload %d, --rate %g: want 0 or more", o.PayloadBytes, o.Rate)
			}
			if err := checkRun(o.Duration, count); err != nil {
				return err
			}
			o.Duration = runDuration(cmd, o.Duration)
			o.QoS, o.Count, o.Version = byte(qos), count, version
			o.Recorder = bench.NewRecorder()

			ctx, stop := interruptible(cmd)
			defer stop()
			start := time.Now()
			stopProgress := out.progress(cmd, o.Recorder, "mqtt")
			res, err := mqttbench.Run(ctx, o)
			stopProgress()
			if err != nil && !errors.Is(err, mqttbench.ErrPublishesFailed) && ctx.Err() == nil {
				return err
			}
			elapsed := res.Elapsed
			if elapsed <= 0 {
				elapsed = time.Since(start)
			}
			rep := o.Recorder.Report("mqtt", elapsed)
			rep.Extra = map[string]any{
				"mqtt_addr":    o.Addr,
				"mqtt_version": version,
				"clients":      o.Clients,
				"window":       o.Window,
				"qos":          qos,
				"payload":      o.PayloadBytes,
				"topic":        o.Topic,
				"target_rate":  o.Rate,
				"published":    res.Published,
			}
			if qos == 0 {
				rep.Extra["latency"] = "none: QoS 0 has no acknowledgement"
			} else {
				rep.Extra["latency"] = fmt.Sprintf("publish to %s", map[int]string{1: "PUBACK", 2: "PUBCOMP"}[qos])
			}
			return out.report(cmd, rep)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Addr, "mqtt-addr", "127.0.0.1:1883", "MQTT broker host:port")
	f.IntVar(&version, "mqtt-version", 3, "MQTT protocol version: 3 (3.1.1) or 5")
	f.IntVar(&o.Clients, "clients", 50, "concurrent MQTT connections")
	f.IntVar(&qos, "qos", 1, "QoS of the publishes: 0, 1 or 2")
	f.IntVar(&o.PayloadBytes, "payload", 256, "payload bytes per publish")
	f.StringVar(&o.Topic, "topic", "bench/%d", "topic pattern; %d is the client number")
	f.StringVar(&o.ClientID, "client-id", "weir-bench-%d", "client id pattern; %d is the client number")
	f.StringVar(&o.Username, "username", "", "MQTT username")
	f.StringVar(&o.Password, "password", "", "MQTT password")
	f.IntVar(&o.Window, "window", 16, "publishes in flight (unacknowledged) per client")
	f.Float64Var(&o.Rate, "rate", 0, "target publishes per second across clients (0 = as fast as acks allow)")
	f.DurationVar(&o.Duration, "duration", 10*time.Second, "how long to publish (0: until --count)")
	f.Int64Var(&count, "count", 0, "publishes in all (0: until --duration; alone, it lifts the default --duration)")
	out.addFlags(cmd)
	return cmd
}
