package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"os/signal"
	"time"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
	"github.com/weir-log/weir/client"
)

// Create a stream, append to it and read it back. It needs a running server,
// so it is compiled but not run.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	c, err := client.Dial(ctx, "127.0.0.1:6570")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	if _, err := c.CreateStream(ctx, "sensors", client.ShardCount(4), client.BacklogDuration(24*time.Hour)); err != nil {
		log.Fatal(err)
	}
	ids, err := c.Append(ctx, "sensors", []client.Record{
		{Key: "device-1", Payload: []byte(`{"t": 21.5}`)},
		{Key: "device-2", Payload: []byte(`{"t": 19.0}`)},
	}, client.Compression(hstreampb.CompressionType_Zstd))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("appended", wire.FormatRecordID(ids[0]), wire.FormatRecordID(ids[1]))

	err = c.ReadStream(ctx, "sensors", client.Earliest(), client.Latest(), 0, func(r client.ReceivedRecord) error {
		fmt.Printf("%s %s %s\n", wire.FormatRecordID(r.ID), r.Key, r.Payload)
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
}

// Create a subscription and print its records as they arrive, acking each,
// until interrupted. It needs a running server, so it is compiled but not
// run.
func ExampleClient_Consume() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	c, err := client.Dial(ctx, "127.0.0.1:6570")
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	if _, err := c.CreateSubscription(ctx, "sensors-alerts", "sensors",
		client.WithSubscriptionOffset(hstreampb.SpecialOffset_EARLIEST), client.WithAckTimeout(time.Minute)); err != nil {
		log.Fatal(err)
	}
	err = c.Consume(ctx, "sensors-alerts", "alerts-1", func(_ context.Context, m *client.Message) error {
		fmt.Printf("%s %s %s\n", wire.FormatRecordID(m.Record.ID), m.Record.Key, m.Record.Payload)
		m.Ack()
		return nil
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		log.Fatal(err)
	}
}
