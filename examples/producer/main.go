// Command producer is a small device simulator: it appends readings from
// -devices devices to a stream, keyed by device id, then reads back the
// newest few. Start a node with `make run`, then:
//
//	go run ./examples/producer -stream sensors -devices 10 -readings 100
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
	"github.com/weir-log/weir/client"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:6570", "weir node address")
	stream := flag.String("stream", "sensors", "stream to append to (created if missing)")
	devices := flag.Int("devices", 10, "number of simulated devices")
	readings := flag.Int("readings", 100, "readings per device")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := client.Dial(ctx, *addr)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	if _, err := c.CreateStream(ctx, *stream, client.ShardCount(4)); err != nil && status.Code(err) != codes.AlreadyExists {
		log.Fatal(err)
	}
	start := time.Now()
	for r := range *readings {
		batch := make([]client.Record, *devices)
		for d := range batch {
			batch[d] = client.Record{
				Key:     fmt.Sprintf("device-%03d", d),
				Payload: fmt.Appendf(nil, `{"reading":%d,"celsius":%.1f}`, r, 20+float64((r+d)%50)/10),
			}
		}
		if _, err := c.Append(ctx, *stream, batch, client.Compression(hstreampb.CompressionType_Zstd)); err != nil {
			log.Fatal(err)
		}
	}
	n := *devices * *readings
	fmt.Printf("appended %d readings in %v\n", n, time.Since(start).Round(time.Millisecond))

	shown := 0
	err = c.ReadStream(ctx, *stream, client.Earliest(), client.Latest(), 0, func(r client.ReceivedRecord) error {
		if shown < 5 {
			fmt.Printf("%s %s %s\n", wire.FormatRecordID(r.ID), r.Key, r.Payload)
			shown++
		}
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
}
