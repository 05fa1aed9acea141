package mqttbench

import (
	"context"
	"errors"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/weir-log/weir/internal/bench"
)

// client3 is an MQTT 3.1.1 connection (paho.mqtt.golang).
type client3 struct{ c paho.Client }

func connect3(o Options, id string) (*client3, error) {
	opts := paho.NewClientOptions().AddBroker("tcp://" + o.Addr).
		SetClientID(id).SetCleanSession(true).
		SetAutoReconnect(false).SetConnectRetry(false).
		SetUsername(o.Username).SetPassword(o.Password).
		SetWriteTimeout(30 * time.Second).SetKeepAlive(60 * time.Second)
	c := paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return nil, errors.New("no CONNACK within 10s")
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	return &client3{c: c}, nil
}

func (c *client3) close() { c.c.Disconnect(100) }

// run has one goroutine publish and another wait for the tokens in
// publish order (they complete in that order on one connection); the
// channel's capacity is the window.
func (c *client3) run(ctx context.Context, lim *bench.Limit, topic string, qos byte, payload []byte, window int,
	done func(time.Time, error)) {
	type inflight struct {
		tok  paho.Token
		sent time.Time
	}
	tokens := make(chan inflight, window)
	go func() {
		defer close(tokens)
		for lim.Next(ctx) {
			sent := time.Now()
			tokens <- inflight{c.c.Publish(topic, qos, false, payload), sent}
		}
	}()
	for f := range tokens {
		if !f.tok.WaitTimeout(time.Minute) {
			done(f.sent, errors.New("no acknowledgement within a minute"))
			continue
		}
		done(f.sent, f.tok.Error())
	}
}

func (c *client3) barrier(context.Context) error {
	tok := c.c.Subscribe(barrierTopic, 0, nil)
	if !tok.WaitTimeout(time.Minute) {
		return errors.New("no SUBACK within a minute")
	}
	return tok.Error()
}
