// Package mqttbench is an MQTT load generator: clients that publish as fast
// as their acknowledgements allow, each with a bounded number of publishes
// in flight. weir's MQTT benchmark uses it against weir and a bare mochi
// broker in the same run.
package mqttbench

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// Options describe one load.
type Options struct {
	Addr         string        // broker host:port
	Clients      int           // concurrent MQTT 3.1.1 connections
	Window       int           // publishes in flight per client (unacknowledged, QoS > 0)
	PayloadBytes int           // payload size
	QoS          byte          // 0, 1 or 2
	Duration     time.Duration // how long clients keep publishing
	Topic        string        // fmt pattern with the client number, e.g. "bench/%d/data"
	ClientID     string        // fmt pattern with the client number, e.g. "bench-%d"
	Username     string        // optional
	Password     string        // optional
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

// Run connects every client, then has each publish for Duration with at
// most Window publishes unacknowledged, and waits (up to a minute) for the
// last acknowledgements. Connections are closed before it returns.
func Run(ctx context.Context, o Options) (Result, error) {
	if o.Clients < 1 || o.Window < 1 || o.Duration <= 0 {
		return Result{}, errors.New("mqttbench: Clients, Window and Duration must be positive")
	}
	clients := make([]paho.Client, o.Clients)
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.Disconnect(100)
			}
		}
	}()
	for i := range clients {
		opts := paho.NewClientOptions().AddBroker("tcp://" + o.Addr).
			SetClientID(fmt.Sprintf(o.ClientID, i)).SetCleanSession(true).
			SetAutoReconnect(false).SetConnectRetry(false).
			SetUsername(o.Username).SetPassword(o.Password).
			SetWriteTimeout(30 * time.Second).SetKeepAlive(60 * time.Second)
		c := paho.NewClient(opts)
		if tok := c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
			return Result{}, fmt.Errorf("mqttbench: client %d connecting to %s: %v", i, o.Addr, tok.Error())
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
	end := start.Add(o.Duration)
	var wg sync.WaitGroup
	for i, c := range clients {
		topic := fmt.Sprintf(o.Topic, i)
		// Tokens complete in publish order on one connection; the
		// channel's capacity is the window.
		tokens := make(chan paho.Token, o.Window)
		wg.Go(func() {
			defer close(tokens)
			for time.Now().Before(end) && ctx.Err() == nil {
				tokens <- c.Publish(topic, o.QoS, false, payload)
				atomic.AddInt64(&res.Published, 1)
			}
		})
		wg.Go(func() {
			for tok := range tokens {
				if !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
					atomic.AddInt64(&res.Failed, 1)
					continue
				}
				atomic.AddInt64(&res.Acked, 1)
				lastAck.Store(int64(time.Since(start)))
			}
		})
	}
	wg.Wait()
	res.Elapsed = time.Duration(lastAck.Load())
	if res.Failed > 0 {
		return res, fmt.Errorf("mqttbench: %d of %d publishes failed", res.Failed, res.Published)
	}
	return res, ctx.Err()
}
