package mqtttest

import (
	"fmt"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

func gen(prefix string) func(i int) (string, []byte) {
	return func(i int) (string, []byte) {
		return fmt.Sprintf("t/%s/%d", prefix, i%4), fmt.Appendf(nil, "%s-%d", prefix, i)
	}
}

// missing returns the payloads prefix-0 … prefix-(n-1) that msgs lacks.
func missing(msgs []Message, prefix string, n int) []string {
	seen := map[string]bool{}
	for _, m := range msgs {
		seen[string(m.Payload)] = true
	}
	var miss []string
	for i := range n {
		if p := fmt.Sprintf("%s-%d", prefix, i); !seen[p] {
			miss = append(miss, p)
		}
	}
	return miss
}

// checkAll fails unless msgs holds every payload prefix-0 … prefix-(n-1).
func checkAll(t *testing.T, msgs []Message, prefix string, n int) {
	t.Helper()
	if miss := missing(msgs, prefix, n); len(miss) > 0 {
		t.Errorf("%d messages are missing: %q", len(miss), miss)
	}
}

func TestObserveAcrossRestart(t *testing.T) {
	Each(t, func(t *testing.T, k Kind) {
		b := Start(t, k, Options{})
		if b.Kind != k || b.URL != "tcp://"+b.Addr {
			t.Fatalf("broker %+v", b)
		}
		obs := b.Observe(t, "t/#")

		b.Publish(t, "pub-1", "", "", 100, gen("a"))
		checkAll(t, obs.WaitCount(t, 100, 10*time.Second), "a", 100)

		b.Restart(t)
		b.Publish(t, "pub-2", "", "", 100, gen("b"))
		obs.WaitCount(t, 200, 10*time.Second)
		// Some of the first 100 may come again after the restart (QoS 1:
		// at least once), so 200 messages need not be all of them yet.
		msgs := obs.WaitUntil(t, 10*time.Second, func(msgs []Message) bool {
			return len(missing(msgs, "b", 100)) == 0
		})
		checkAll(t, msgs, "a", 100)
		checkAll(t, msgs, "b", 100)
		for _, m := range msgs {
			if m.Retained {
				t.Fatalf("message %q is retained", m.Payload)
			}
		}
	})
}

func TestStopStartIdempotent(t *testing.T) {
	Each(t, func(t *testing.T, k Kind) {
		b := Start(t, k, Options{})
		b.Start(t) // running: nothing to do
		b.Stop(t)
		b.Stop(t)
		if err := connect(b.URL, "", ""); err == nil {
			t.Fatal("connected to a stopped broker")
		}
		b.Start(t)
		if err := connect(b.URL, "", ""); err != nil {
			t.Fatalf("connect after Start: %v", err)
		}
	})
}

func TestUsers(t *testing.T) {
	Each(t, func(t *testing.T, k Kind) {
		users := map[string]string{"alice": "secret", "bob": "hunter2"}
		b := Start(t, k, Options{Users: users})

		for _, c := range []struct{ user, pass string }{
			{"alice", "wrong"},
			{"bob", "secret"},
			{"mallory", "secret"},
			{"", ""},
		} {
			if err := connect(b.URL, c.user, c.pass); err == nil {
				t.Errorf("%q/%q connected", c.user, c.pass)
			}
		}
		for u, p := range users {
			if err := connect(b.URL, u, p); err != nil {
				t.Errorf("%s: %v", u, err)
			}
		}

		obs := b.Observe(t, "t/#")
		b.Publish(t, "pub-1", "bob", "hunter2", 10, gen("u"))
		checkAll(t, obs.WaitCount(t, 10, 10*time.Second), "u", 10)
	})
}

// connect connects a paho client and disconnects it again.
func connect(url, user, pass string) error {
	opts := paho.NewClientOptions().
		AddBroker(url).
		SetClientID("mqtttest-connect").
		SetAutoReconnect(false).
		SetConnectTimeout(5 * time.Second)
	if user != "" {
		opts.SetUsername(user).SetPassword(pass)
	}
	c := paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(10 * time.Second) {
		return fmt.Errorf("no CONNACK")
	}
	if err := tok.Error(); err != nil {
		return err
	}
	c.Disconnect(50)
	return nil
}
