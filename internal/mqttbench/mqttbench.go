// Package mqttbench is an MQTT load generator: clients that publish as fast
// as their acknowledgements allow (or at a set rate), each with a bounded
// number of publishes in flight, over MQTT 3.1.1 (paho.mqtt.golang) or
// MQTT 5 (paho.golang). weir's MQTT benchmark uses it against weir and a
// bare mochi broker in the same run, and `weir bench mqtt` against any
// broker.
//
// A publish's latency, recorded into Options.Recorder, runs from the
// publish call to its acknowledgement: PUBACK for QoS 1, PUBCOMP for QoS 2.
// QoS 0 has no acknowledgement: its publishes are counted when written,
// without a latency, and each client ends with a SUBSCRIBE and waits for
// the SUBACK, so the broker has read every publish before the connection
// closes.
package mqttbench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/weir-log/weir/internal/bench"
)

// ErrPublishesFailed is returned, wrapped, by Run when some publishes
// failed; the Result counts them.
var ErrPublishesFailed = errors.New("mqttbench: publishes failed")

// barrierTopic is what a client subscribes to after its QoS 0 publishes;
// a refused subscription is acknowledged (with an error code) all the same.
const barrierTopic = "mqttbench/barrier"

// Options describe one load.
type Options struct {
	Addr         string        // broker host:port
	Version      int           // MQTT protocol: 3 (3.1.1, the default when 0) or 5
	Clients      int           // concurrent MQTT connections
	Window       int           // publishes in flight per client (unacknowledged, QoS > 0)
	PayloadBytes int           // payload size
	QoS          byte          // 0, 1 or 2
	Duration     time.Duration // how long clients keep publishing (0: until Count)
	Count        int64         // publishes in all, across clients (0: until Duration)
	Rate         float64       // publishes per second across clients (0: as fast as acks allow)
	Topic        string        // fmt pattern with the client number, e.g. "bench/%d/data"
	ClientID     string        // fmt pattern with the client number, e.g. "bench-%d"
	Username     string        // optional
	Password     string        // optional

	// Recorder, when set, gets every acknowledged publish with its
	// latency (QoS 0: counted without one) and every failed one.
	Recorder *bench.Recorder
}

// Result is what a load achieved.
type Result struct {
	Published int64         // publishes sent
	Acked     int64         // publishes acknowledged (for QoS 0: sent)
	Failed    int64         // publishes that failed (connection lost, refused)
	Elapsed   time.Duration // from the first publish to the last acknowledgement
}

// Rate is acknowledged publishes per second.
func (r Result) Rate() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Acked) / r.Elapsed.Seconds()
}

// publisher is one connected client of either protocol version.
type publisher interface {
	// run publishes while lim allows, with at most window in flight, and
	// calls done once per publish with its outcome.
	run(ctx context.Context, lim *bench.Limit, topic string, qos byte, payload []byte, window int,
		done func(sent time.Time, err error))
	// barrier returns once the broker has read everything sent before
	// it (a SUBSCRIBE's SUBACK comes after the packets before it), so
	// that closing the connection drops no unread QoS 0 publish.
	barrier(ctx context.Context) error
	close()
}

// Run connects every client, then has each publish for Duration (or until
// Count publishes in all) with at most Window publishes unacknowledged,
// and waits (up to a minute) for the last acknowledgements. Connections
// are closed before it returns. When publishes failed it returns the
// Result with an error wrapping ErrPublishesFailed.
func Run(ctx context.Context, o Options) (Result, error) {
	if o.Clients < 1 || o.Window < 1 || (o.Duration <= 0 && o.Count <= 0) {
		return Result{}, errors.New("mqttbench: Clients and Window must be positive, and Duration or Count")
	}
	if o.Version == 0 {
		o.Version = 3
	}
	if o.Version != 3 && o.Version != 5 {
		return Result{}, fmt.Errorf("mqttbench: Version %d: want 3 (MQTT 3.1.1) or 5", o.Version)
	}
	if o.QoS > 2 {
		return Result{}, fmt.Errorf("mqttbench: QoS %d: want 0, 1 or 2", o.QoS)
	}
	if o.ClientID == "" {
		o.ClientID = "mqttbench-%d"
	}
	clients := make([]publisher, o.Clients)
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.close()
			}
		}
	}()
	for i := range clients {
		var (
			c   publisher
			err error
		)
		id := fmt.Sprintf(o.ClientID, i)
		if o.Version == 5 {
			c, err = connect5(ctx, o, id)
		} else {
			c, err = connect3(o, id)
		}
		if err != nil {
			return Result{}, fmt.Errorf("mqttbench: client %d connecting to %s: %w", i, o.Addr, err)
		}
		clients[i] = c
	}

	payload := make([]byte, o.PayloadBytes)
	for i := range payload {
		payload[i] = byte('a' + i%26)
	}
	var res Result
	var lastAck atomic.Int64
	start := time.Now()
	lim := bench.NewLimit(o.Count, o.Duration, o.Rate)
	done := func(sent time.Time, err error) {
		atomic.AddInt64(&res.Published, 1)
		if err != nil {
			atomic.AddInt64(&res.Failed, 1)
			if o.Recorder != nil {
				o.Recorder.Error()
			}
			return
		}
		now := time.Now()
		atomic.AddInt64(&res.Acked, 1)
		lastAck.Store(int64(now.Sub(start)))
		switch {
		case o.Recorder == nil:
		case o.QoS == 0:
			o.Recorder.Count(len(payload))
		default:
			o.Recorder.Record(now.Sub(sent), len(payload))
		}
	}
	var wg sync.WaitGroup
	var barrierErrs atomic.Int64
	for i, c := range clients {
		topic := fmt.Sprintf(o.Topic, i)
		wg.Go(func() {
			c.run(ctx, lim, topic, o.QoS, payload, o.Window, done)
			if o.QoS == 0 {
				// The broker has read the publishes only now: the
				// load's time runs until then.
				if err := c.barrier(ctx); err != nil && ctx.Err() == nil {
					barrierErrs.Add(1)
				} else {
					lastAck.Store(max(lastAck.Load(), int64(time.Since(start))))
				}
			}
		})
	}
	wg.Wait()
	if n := barrierErrs.Load(); n > 0 {
		return res, fmt.Errorf("mqttbench: %d clients could not confirm the broker read their QoS 0 publishes", n)
	}
	res.Elapsed = time.Duration(lastAck.Load())
	if res.Failed > 0 {
		return res, fmt.Errorf("%w: %d of %d", ErrPublishesFailed, res.Failed, res.Published)
	}
	return res, ctx.Err()
}
