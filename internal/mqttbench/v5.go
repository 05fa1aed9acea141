package mqttbench

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/weir-log/weir/internal/bench"
)

// client5 is an MQTT 5 connection (paho.golang).
type client5 struct{ c *paho.Client }

func connect5(ctx context.Context, o Options, id string) (*client5, error) {
	conn, err := net.DialTimeout("tcp", o.Addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn, PacketTimeout: time.Minute})
	cp := &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 60}
	if o.Username != "" {
		cp.Username, cp.UsernameFlag = o.Username, true
	}
	if o.Password != "" {
		cp.Password, cp.PasswordFlag = []byte(o.Password), true
	}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ca, err := c.Connect(cctx, cp)
	if err != nil {
		conn.Close()
		return nil, err
	}
	if ca.ReasonCode != 0 {
		conn.Close()
		return nil, fmt.Errorf("CONNACK reason code %#x", ca.ReasonCode)
	}
	return &client5{c: c}, nil
}

func (c *client5) close() { _ = c.c.Disconnect(&paho.Disconnect{}) }

// run has window goroutines each publish and wait for the acknowledgement
// in turn (paho.golang's Publish blocks until then); the client also
// keeps to the broker's Receive Maximum.
func (c *client5) run(ctx context.Context, lim *bench.Limit, topic string, qos byte, payload []byte, window int,
	done func(time.Time, error)) {
	var wg sync.WaitGroup
	for range window {
		wg.Go(func() {
			for lim.Next(ctx) {
				sent := time.Now()
				pr, err := c.c.Publish(context.WithoutCancel(ctx), &paho.Publish{Topic: topic, QoS: qos, Payload: payload})
				if err == nil && pr != nil && pr.ReasonCode >= 0x80 {
					err = fmt.Errorf("publish refused: reason code %#x", pr.ReasonCode)
				}
				done(sent, err)
			}
		})
	}
	wg.Wait()
}

func (c *client5) barrier(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	// paho returns an error with the SUBACK when the SUBACK refuses the
	// subscription; any SUBACK means the broker read what came before it,
	// which is all the barrier is for.
	sa, err := c.c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: barrierTopic}}})
	if sa != nil {
		return nil
	}
	return err
}
