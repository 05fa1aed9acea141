package bridge

import (
	"context"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/weir-log/weir/cluster"
)

// Test seams for the ingest connector tests (package bridge_test).

// DriveIngestConnector lets a test play paho's part for the ingest
// connector cs runs at index i, which must not be started: handle hands it
// a message as paho's router goroutine would (call it from one goroutine),
// reconnect starts a new connection generation, as paho's connection
// attempt handler does, and settle starts the settler, which runs until
// ctx ends (and then drains, as on Close): the channel it returns is
// closed when the settler returns.
func DriveIngestConnector(ctx context.Context, cs *Connectors, i int) (handle func(paho.Message), reconnect func(), settle func() <-chan struct{}) {
	c := cs.all[i].(*ingestConnector)
	c.ctx = ctx
	handle = func(m paho.Message) { c.handle(nil, m) }
	reconnect = func() { c.gen.Add(1) }
	settle = func() <-chan struct{} {
		done := make(chan struct{})
		go func() {
			defer close(done)
			c.settle(ctx)
		}()
		return done
	}
	return handle, reconnect, settle
}

// SetIngestCommitWait makes the ingest connector cs runs at index i wait
// for its appends' commits with wait (which may hold them back, then call
// p.Wait) instead of Pending.Wait. Call it before the settler starts.
func SetIngestCommitWait(cs *Connectors, i int, wait func(ctx context.Context, p *cluster.Pending) error) {
	cs.all[i].(*ingestConnector).commitWait = wait
}
