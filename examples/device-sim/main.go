// Command device-sim simulates MQTT devices sending JSON telemetry to weir.
// Each device is its own MQTT client whose client ID is the device id, so
// weir keys its records by device and keeps each device's messages in order.
// With the default topic template telemetry/{device} the records land in the
// stream "telemetry", created on first use. Start a node with `make run`,
// then:
//
//	go run ./examples/device-sim -devices 10 -rate 5 -duration 30s
//
// With an ssl:// (tls://, mqtts://, wss://) broker URL it connects over TLS;
// -tls-ca, -tls-cert and -tls-key set the CA to verify the broker with and
// a client certificate for mutual TLS.
//
// See README.md for the flags and how to read the data back.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// config is everything the flags set.
type config struct {
	broker       string        // MQTT broker URL
	devices      int           // simulated devices, one MQTT connection each
	rate         float64       // messages per second per device
	count        int           // messages per device; 0 = no limit
	duration     time.Duration // how long to publish; 0 = no limit
	qos          int           // 0, 1 or 2
	topic        string        // topic template; {device} is replaced by the device id
	username     string        // MQTT username, optional
	password     string        // MQTT password, optional
	clientPrefix string        // device ids are clientPrefix + 001, 002, …
	progress     time.Duration // how often to print a progress line; 0 = never
	tlsCA        string        // PEM CA bundle to verify the broker with; "" = system roots
	tlsCert      string        // PEM client certificate, for mutual TLS
	tlsKey       string        // its PEM private key

	// tls is the TLS configuration for a TLS broker URL, loaded from the
	// files above by parseFlags; nil means TLS 1.2+ with the system roots
	// and no client certificate.
	tls *tls.Config
}

// brokerSchemes are the broker URL schemes paho.mqtt.golang v1.5.1 dials,
// and whether each uses TLS.
var brokerSchemes = map[string]bool{
	"tcp": false, "mqtt": false, "ws": false, "unix": false,
	"ssl": true, "tls": true, "mqtts": true, "mqtt+ssl": true, "tcps": true, "wss": true,
}

// brokerScheme returns the scheme of a broker URL as paho reads it (no
// "://" means tcp://), lower case.
func brokerScheme(broker string) (string, error) {
	if !strings.Contains(broker, "://") {
		return "tcp", nil
	}
	u, err := url.Parse(broker)
	if err != nil {
		return "", err
	}
	return strings.ToLower(u.Scheme), nil
}

// ackTimeout bounds the wait for one publish's acknowledgement (PUBACK, or
// PUBCOMP for QoS 2), and for the last ones once publishing stops. weir
// acknowledges once the message is committed, and refuses or disconnects a
// publish that waited more than mqtt.ingest.publish-timeout (10 s), so a
// minute means the connection is gone.
const ackTimeout = time.Minute

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "device-sim:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "device-sim:", err)
		os.Exit(1)
	}
}

// parseFlags reads the command line into a config and checks it.
func parseFlags(args []string, errOut io.Writer) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("device-sim", flag.ContinueOnError)
	fs.SetOutput(errOut)
	fs.StringVar(&cfg.broker, "broker", "tcp://127.0.0.1:1883", "MQTT broker URL: tcp://, ws:// or, over TLS, ssl:// (also tls://, mqtts://), wss://")
	fs.IntVar(&cfg.devices, "devices", 10, "number of simulated devices, one MQTT connection each")
	fs.Float64Var(&cfg.rate, "rate", 1, "messages per second per device")
	fs.IntVar(&cfg.count, "count", 0, "messages per device, then stop (0 = no limit)")
	fs.DurationVar(&cfg.duration, "duration", 0, "publish for this long, then stop (0 = no limit); with -count, whichever ends first")
	fs.IntVar(&cfg.qos, "qos", 1, "MQTT QoS: 0, 1 or 2")
	fs.StringVar(&cfg.topic, "topic", "telemetry/{device}", "topic template; {device} is replaced by the device id (the first level names weir's stream)")
	fs.StringVar(&cfg.username, "username", "", "MQTT username (default: none)")
	fs.StringVar(&cfg.password, "password", "", "MQTT password")
	fs.StringVar(&cfg.clientPrefix, "client-prefix", "dev-", "device ids, which are also the MQTT client IDs, are this prefix plus 001, 002, …")
	fs.DurationVar(&cfg.progress, "progress", 5*time.Second, "print a progress line this often (0 = never)")
	fs.StringVar(&cfg.tlsCA, "tls-ca", "", "PEM CA bundle to verify the broker's certificate with (default: the system's roots); needs a TLS -broker url")
	fs.StringVar(&cfg.tlsCert, "tls-cert", "", "PEM client certificate, for a broker that requires one (mutual TLS); with -tls-key")
	fs.StringVar(&cfg.tlsKey, "tls-key", "", "PEM private key of -tls-cert")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if err := cfg.validate(); err != nil {
		return config{}, err
	}
	tc, err := cfg.loadTLS()
	if err != nil {
		return config{}, err
	}
	cfg.tls = tc
	return cfg, nil
}

// loadTLS reads the TLS files the flags name into a client TLS
// configuration (TLS 1.2 or later); errors name the flag and the file.
func (cfg config) loadTLS() (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.tlsCA != "" {
		pem, err := os.ReadFile(cfg.tlsCA)
		if err != nil {
			return nil, fmt.Errorf("-tls-ca %q: %w", cfg.tlsCA, err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("-tls-ca %q: no PEM certificate in it", cfg.tlsCA)
		}
	}
	if cfg.tlsCert != "" {
		certPEM, err := os.ReadFile(cfg.tlsCert)
		if err != nil {
			return nil, fmt.Errorf("-tls-cert %q: %w", cfg.tlsCert, err)
		}
		keyPEM, err := os.ReadFile(cfg.tlsKey)
		if err != nil {
			return nil, fmt.Errorf("-tls-key %q: %w", cfg.tlsKey, err)
		}
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("-tls-cert %q, -tls-key %q: %w", cfg.tlsCert, cfg.tlsKey, err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	return tc, nil
}

// validate reports every flag set to a value it cannot take.
func (cfg config) validate() error {
	var errs []error
	if cfg.devices < 1 {
		errs = append(errs, fmt.Errorf("-devices %d: want at least 1", cfg.devices))
	}
	if !(cfg.rate > 0) || math.IsInf(cfg.rate, 0) {
		errs = append(errs, fmt.Errorf("-rate %v: want a positive number of messages per second", cfg.rate))
	}
	if cfg.count < 0 {
		errs = append(errs, fmt.Errorf("-count %d: want 0 (no limit) or more", cfg.count))
	}
	if cfg.duration < 0 {
		errs = append(errs, fmt.Errorf("-duration %s: want 0 (no limit) or more", cfg.duration))
	}
	if cfg.qos < 0 || cfg.qos > 2 {
		errs = append(errs, fmt.Errorf("-qos %d: want 0, 1 or 2", cfg.qos))
	}
	if cfg.topic == "" || strings.ContainsAny(cfg.topic, "+#") {
		errs = append(errs, fmt.Errorf("-topic %q: want a topic name (no wildcards)", cfg.topic))
	}
	if cfg.progress < 0 {
		errs = append(errs, fmt.Errorf("-progress %s: want 0 (never) or more", cfg.progress))
	}
	scheme, err := brokerScheme(cfg.broker)
	isTLS, known := brokerSchemes[scheme]
	switch {
	case err != nil:
		errs = append(errs, fmt.Errorf("-broker %q: %w", cfg.broker, err))
	case !known:
		errs = append(errs, fmt.Errorf("-broker %q: unknown scheme %q; want tcp://, ws://, ssl:// (tls://, mqtts://) or wss://", cfg.broker, scheme))
	case !isTLS:
		for _, f := range []struct{ flag, value string }{{"-tls-ca", cfg.tlsCA}, {"-tls-cert", cfg.tlsCert}, {"-tls-key", cfg.tlsKey}} {
			if f.value != "" {
				errs = append(errs, fmt.Errorf("%s is set but -broker %q is not a TLS url (ssl://, tls://, mqtts://, wss://)", f.flag, cfg.broker))
			}
		}
	}
	if cfg.tlsCert != "" && cfg.tlsKey == "" {
		errs = append(errs, errors.New("-tls-cert is set without -tls-key: give both or neither"))
	}
	if cfg.tlsKey != "" && cfg.tlsCert == "" {
		errs = append(errs, errors.New("-tls-key is set without -tls-cert: give both or neither"))
	}
	return errors.Join(errs...)
}

// tlsConfig is the TLS configuration to dial a TLS broker URL with: the one
// parseFlags loaded, else TLS 1.2+ with the system roots. paho uses it only
// for TLS schemes.
func (cfg config) tlsConfig() *tls.Config {
	if cfg.tls != nil {
		return cfg.tls
	}
	return &tls.Config{MinVersion: tls.VersionTLS12}
}

// deviceID is the id, and MQTT client ID, of device i (from 0).
func (cfg config) deviceID(i int) string {
	return fmt.Sprintf("%s%03d", cfg.clientPrefix, i+1)
}

// reading is one telemetry message, as JSON.
type reading struct {
	Device      string  `json:"device"`
	Seq         int     `json:"seq"` // from 1, per device
	TS          int64   `json:"ts"`  // unix milliseconds
	Temperature float64 `json:"temperature"`
	Humidity    float64 `json:"humidity"`
}

// stats counts publishes across devices.
type stats struct {
	sent, acked, failed atomic.Int64
	lost                atomic.Int64 // devices whose connection was lost
}

// run connects cfg.devices MQTT clients, has each publish at cfg.rate
// until cfg.count messages are sent, cfg.duration has passed or ctx is
// done, waits for the outstanding acknowledgements, and prints a summary.
// It returns an error if a device cannot connect, loses its connection, or
// a publish failed; ctx ending (Ctrl-C) is a normal stop.
func run(ctx context.Context, cfg config, out io.Writer) error {
	if err := cfg.validate(); err != nil {
		return err
	}
	qos := byte(cfg.qos)
	ids := cfg.deviceID(0)
	if cfg.devices > 1 {
		ids = fmt.Sprintf("%d devices, %s … %s", cfg.devices, ids, cfg.deviceID(cfg.devices-1))
	}
	fmt.Fprintf(out, "device-sim: %s → %s, topic %s, QoS %d, %g msg/s each%s\n",
		ids, cfg.broker, cfg.topic, qos, cfg.rate, bound(cfg))

	devices := make([]*device, cfg.devices)
	defer func() {
		for _, d := range devices {
			if d != nil && d.c != nil {
				d.c.Disconnect(250)
			}
		}
	}()
	for i := range devices {
		id := cfg.deviceID(i)
		d := &device{
			id:    id,
			topic: strings.ReplaceAll(cfg.topic, "{device}", id),
			rng:   rand.New(rand.NewPCG(uint64(i), 42)),
			lost:  make(chan error, 1),
		}
		devices[i] = d
		if err := d.connect(cfg); err != nil {
			return err
		}
	}

	pctx := ctx
	if cfg.duration > 0 {
		var cancel context.CancelFunc
		pctx, cancel = context.WithTimeout(ctx, cfg.duration)
		defer cancel()
	}
	var (
		st       stats
		errMu    sync.Mutex
		firstErr error // the first error, for the summary
	)
	noteErr := func(id string, err error) {
		errMu.Lock()
		defer errMu.Unlock()
		if firstErr == nil {
			firstErr = fmt.Errorf("device %s: %w", id, err)
		}
	}
	start := time.Now()
	stopProgress := startProgress(cfg.progress, out, &st, start)
	var wg sync.WaitGroup
	for _, d := range devices {
		// Tokens complete in publish order on one connection; the
		// channel's capacity bounds the publishes a device has waiting
		// for their acknowledgement before it pauses.
		tokens := make(chan paho.Token, 1024)
		wg.Go(func() {
			defer close(tokens)
			if err := d.publish(pctx, cfg, qos, tokens, &st); err != nil {
				st.lost.Add(1)
				noteErr(d.id, err)
			}
		})
		wg.Go(func() {
			for tok := range tokens {
				var err error
				if !tok.WaitTimeout(ackTimeout) {
					err = fmt.Errorf("no acknowledgement within %s", ackTimeout)
				} else {
					err = tok.Error()
				}
				if err != nil {
					st.failed.Add(1)
					noteErr(d.id, err)
					continue
				}
				st.acked.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	stopProgress()

	sent, acked, failed, lost := st.sent.Load(), st.acked.Load(), st.failed.Load(), st.lost.Load()
	ackWord := "acked"
	if qos == 0 {
		ackWord = "written" // QoS 0 has no acknowledgement
	}
	fmt.Fprintf(out, "sent %d  %s %d  errors %d  in %s  %.1f msg/s\n",
		sent, ackWord, acked, failed, elapsed.Round(time.Millisecond), float64(acked)/elapsed.Seconds())
	switch {
	case lost > 0:
		fmt.Fprintf(out, "%d devices lost their connection and stopped\n", lost)
		return fmt.Errorf("%d devices lost their connection, %d of %d publishes failed; first: %w", lost, failed, sent, firstErr)
	case failed > 0:
		return fmt.Errorf("%d of %d publishes failed; first: %w", failed, sent, firstErr)
	}
	return nil
}

// bound describes when the run stops.
func bound(cfg config) string {
	switch {
	case cfg.count > 0 && cfg.duration > 0:
		return fmt.Sprintf(", %d messages each or %s", cfg.count, cfg.duration)
	case cfg.count > 0:
		return fmt.Sprintf(", %d messages each", cfg.count)
	case cfg.duration > 0:
		return fmt.Sprintf(", for %s", cfg.duration)
	default:
		return ", until Ctrl-C"
	}
}

// device is one simulated device: its MQTT connection and a random walk
// of readings.
type device struct {
	id, topic string
	rng       *rand.Rand
	c         paho.Client
	lost      chan error // capacity 1: why the connection was lost
}

// connect opens the device's MQTT 3.1.1 connection, with the device id as
// client ID. A lost connection is not re-established: the device stops,
// and its unacknowledged publishes count as errors.
func (d *device) connect(cfg config) error {
	opts := paho.NewClientOptions().AddBroker(cfg.broker).SetClientID(d.id).
		SetUsername(cfg.username).SetPassword(cfg.password).
		SetCleanSession(true).SetAutoReconnect(false).SetConnectRetry(false).
		SetConnectTimeout(10 * time.Second).SetWriteTimeout(30 * time.Second).
		SetKeepAlive(30 * time.Second).
		SetTLSConfig(cfg.tlsConfig()).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			select {
			case d.lost <- err:
			default:
			}
		})
	c := paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(15 * time.Second) {
		c.Disconnect(0)
		return fmt.Errorf("device %s: connecting to %s: no answer within 15s", d.id, cfg.broker)
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("device %s: connecting to %s: %w", d.id, cfg.broker, err)
	}
	d.c = c
	return nil
}

// publish sends readings at cfg.rate until cfg.count are sent or ctx is
// done, passing each publish's token on for its acknowledgement. It
// returns an error if the connection was lost.
func (d *device) publish(ctx context.Context, cfg config, qos byte, tokens chan<- paho.Token, st *stats) error {
	interval := time.Duration(float64(time.Second) / cfg.rate)
	// Spread the devices' first messages over one interval, so they do
	// not all publish at the same instant.
	next := time.Now().Add(time.Duration(d.rng.Int64N(int64(interval) + 1)))
	timer := time.NewTimer(time.Until(next))
	defer timer.Stop()
	temp, hum := 18+d.rng.Float64()*6, 35+d.rng.Float64()*20
	for seq := 1; cfg.count == 0 || seq <= cfg.count; seq++ {
		select {
		case <-ctx.Done():
			return nil
		case err := <-d.lost:
			return fmt.Errorf("connection lost after %d messages: %w", seq-1, err)
		case <-timer.C:
		}
		temp += d.rng.NormFloat64() * 0.1
		hum = min(100, max(0, hum+d.rng.NormFloat64()*0.3))
		payload, err := json.Marshal(reading{
			Device:      d.id,
			Seq:         seq,
			TS:          time.Now().UnixMilli(),
			Temperature: math.Round(temp*10) / 10,
			Humidity:    math.Round(hum*10) / 10,
		})
		if err != nil {
			panic(err) // a struct of numbers and a string always marshals
		}
		tok := d.c.Publish(d.topic, qos, false, payload)
		st.sent.Add(1)
		select {
		case tokens <- tok:
		case <-ctx.Done():
			tokens <- tok // still wait for its acknowledgement
			return nil
		}
		// Keep to the schedule; after a stall (a full token window),
		// restart it rather than send a burst.
		next = next.Add(interval)
		if now := time.Now(); next.Before(now) {
			next = now
		}
		timer.Reset(time.Until(next))
	}
	return nil
}

// startProgress prints a line every interval until the returned function is
// called.
func startProgress(interval time.Duration, out io.Writer, st *stats, start time.Time) (stop func()) {
	if interval <= 0 {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				fmt.Fprintf(out, "%6.1fs  sent %d  acked %d  errors %d\n",
					time.Since(start).Seconds(), st.sent.Load(), st.acked.Load(), st.failed.Load())
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}
