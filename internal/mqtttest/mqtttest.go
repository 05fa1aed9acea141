// Package mqtttest starts an external MQTT broker for tests of weir's MQTT
// connectors, which connect to such a broker as paho clients.
//
// Two kinds of broker share one API:
//
//   - Mosquitto: the mosquitto binary (Debian package mosquitto), run as a
//     child process with its own config and persistence directory in
//     t.TempDir(). When it is not installed the test is skipped, unless
//     WEIR_REQUIRE_MOSQUITTO is set, then it fails. Its persistence
//     survives Restart: persistent sessions and their queued QoS 1
//     messages are kept.
//   - Mochi: an in-process github.com/mochi-mqtt/server/v2 broker. A
//     restart makes a new in-memory server, so sessions are lost, but
//     Observers are subscribed again before it serves.
//
// Both listen on a free port of 127.0.0.1 and are stopped at the end of the
// test. Their logs (mosquitto's output, mochi's slog) are kept and written
// to the test log when the test fails.
//
// A typical test:
//
//	mqtttest.Each(t, func(t *testing.T, k mqtttest.Kind) {
//		b := mqtttest.Start(t, k, mqtttest.Options{})
//		obs := b.Observe(t, "out/#")
//		// … point a connector at b.URL …
//		b.Restart(t)
//		obs.WaitCount(t, 100, 10*time.Second) // duplicates count too: see Broker.Stop
//	})
package mqtttest

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/weir-log/weir/broker"
	"github.com/weir-log/weir/internal/syncbuf"
)

// Kind is a kind of broker.
type Kind string

// The kinds of broker.
const (
	Mosquitto Kind = "mosquitto" // the mosquitto binary, as a child process
	Mochi     Kind = "mochi"     // an in-process mochi-mqtt server
)

// RequireMosquittoEnv names the environment variable that, when non-empty,
// turns a missing mosquitto binary from a skip into a failure.
const RequireMosquittoEnv = "WEIR_REQUIRE_MOSQUITTO"

// Bounds of the waits.
const (
	startTimeout   = 10 * time.Second // until the broker accepts connections
	stopTimeout    = 10 * time.Second // until mosquitto exits after SIGTERM
	connectTimeout = 10 * time.Second // a paho client's connect or subscribe
	publishTimeout = 30 * time.Second // until every PUBACK of a Publish
)

// Options configures a broker.
type Options struct {
	// Users maps username to password. Empty: anonymous clients are
	// allowed. Non-empty: only these users may connect (passwords must
	// not be empty).
	Users map[string]string
}

// Broker is a running (or stopped) broker.
type Broker struct {
	Kind Kind
	Addr string // 127.0.0.1:port
	URL  string // tcp://127.0.0.1:port

	opts Options
	log  *syncbuf.Buffer // mochi's log; mosquitto's stdout and stderr

	mu        sync.Mutex
	running   bool
	observers []*Observer
	nextID    int

	// mosquitto
	bin     string
	dir     string // config, password file, persistence and log
	conf    string
	logFile string // mosquitto's log (its stdout is block-buffered)
	proc    *process

	// mochi
	srv *mqtt.Server
}

// Start starts a broker of kind k; it is stopped at the end of the test.
func Start(t testing.TB, k Kind, opts Options) *Broker {
	t.Helper()
	for u, p := range opts.Users {
		if u == "" || p == "" {
			t.Fatalf("mqtttest: user %q: empty usernames and passwords are not supported", u)
		}
	}
	b := &Broker{Kind: k, opts: opts, log: &syncbuf.Buffer{}}
	switch k {
	case Mosquitto:
		b.bin = requireMosquitto(t)
		b.dir = t.TempDir() // before the Cleanup below, so removed after the stop
		b.conf = filepath.Join(b.dir, "mosquitto.conf")
		b.logFile = filepath.Join(b.dir, "mosquitto.log")
	case Mochi:
	default:
		t.Fatalf("mqtttest: unknown broker kind %q", k)
	}
	b.Addr = freeAddr(t)
	b.URL = "tcp://" + b.Addr
	if k == Mosquitto {
		b.writeMosquittoConfig(t)
	}
	t.Cleanup(func() {
		if err := b.stop(); err != nil {
			t.Errorf("mqtttest: stop %s on %s: %v", b.Kind, b.Addr, err)
		}
		if t.Failed() {
			t.Logf("mqtttest: %s broker log (%s):\n%s", b.Kind, b.Addr, b.Log())
		}
	})
	b.Start(t)
	return b
}

// Each runs f as a subtest per kind: "mosquitto" (skipped when mosquitto
// is not installed, failed when WEIR_REQUIRE_MOSQUITTO is set) and "mochi".
func Each(t *testing.T, f func(t *testing.T, k Kind)) {
	t.Helper()
	for _, k := range []Kind{Mosquitto, Mochi} {
		t.Run(string(k), func(t *testing.T) {
			if k == Mosquitto {
				requireMosquitto(t)
			}
			f(t, k)
		})
	}
}

// Start starts the broker again on the same port after Stop. Mosquitto
// runs with the same config and persistence directory, so persistent
// sessions and their queued QoS 1 messages survive; mochi is a new
// in-memory server (sessions are lost) on which every Observer is
// subscribed before it serves. Starting a running broker does nothing.
func (b *Broker) Start(t testing.TB) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.running {
		return
	}
	var err error
	switch b.Kind {
	case Mosquitto:
		err = b.startMosquitto()
	case Mochi:
		err = b.startMochi()
	}
	if err != nil {
		t.Fatalf("mqtttest: start %s on %s: %v (its log is printed at the end of the test)", b.Kind, b.Addr, err)
	}
	b.running = true
}

// Stop stops the broker: mosquitto gets SIGTERM and is waited for, so it
// saves its persistence; mochi is closed. Stopping a stopped broker does
// nothing.
//
// mosquitto does not read what is still in its sockets when it stops: a
// QoS 1 message whose PUBACK it had not processed yet (often dozens right
// after a burst, even to an Observer that has recorded them all) is saved
// as in flight and delivered again after Start. Count distinct payloads
// (Observer.WaitUntil), not messages, across a restart.
func (b *Broker) Stop(t testing.TB) {
	t.Helper()
	if err := b.stop(); err != nil {
		t.Fatalf("mqtttest: stop %s on %s: %v", b.Kind, b.Addr, err)
	}
}

// Restart stops the broker and starts it again on the same port.
func (b *Broker) Restart(t testing.TB) {
	t.Helper()
	b.Stop(t)
	b.Start(t)
}

// Log returns what the broker has logged so far, over all its runs.
func (b *Broker) Log() string {
	if b.Kind != Mosquitto {
		return b.log.String()
	}
	data, err := os.ReadFile(b.logFile)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		data = fmt.Appendf(data, "mqtttest: read the log: %v\n", err)
	}
	if out := b.log.String(); out != "" {
		data = fmt.Appendf(data, "--- mosquitto's stdout and stderr:\n%s", out)
	}
	return string(data)
}

// note adds a line of the harness's own to the broker's log.
func (b *Broker) note(format string, args ...any) {
	line := fmt.Sprintf("--- mqtttest: "+format+"\n", args...)
	if b.Kind != Mosquitto {
		b.log.Write([]byte(line))
		return
	}
	// mosquitto appends to its log file too (O_APPEND), so lines do not
	// overwrite each other.
	f, err := os.OpenFile(b.logFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		b.log.Write([]byte(line))
		return
	}
	defer f.Close()
	f.WriteString(line)
}

func (b *Broker) stop() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.running {
		return nil
	}
	b.running = false
	switch b.Kind {
	case Mosquitto:
		return b.stopMosquitto()
	case Mochi:
		srv := b.srv
		b.srv = nil
		return broker.CloseServer(srv)
	}
	return nil
}

// --- mosquitto ---

// mosquittoPath returns the mosquitto binary, or "" when there is none.
func mosquittoPath() string {
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/usr/bin/mosquitto"} {
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() {
			return p
		}
	}
	return ""
}

// requireMosquitto returns the mosquitto binary, or skips the test (fails
// it when WEIR_REQUIRE_MOSQUITTO is set) if there is none.
func requireMosquitto(t testing.TB) string {
	t.Helper()
	p := mosquittoPath()
	if p == "" {
		const msg = "mqtttest: mosquitto is not installed (apt-get install mosquitto)"
		if os.Getenv(RequireMosquittoEnv) != "" {
			t.Fatalf("%s and %s is set", msg, RequireMosquittoEnv)
		}
		t.Skip(msg)
	}
	return p
}

func (b *Broker) writeMosquittoConfig(t testing.TB) {
	t.Helper()
	_, port, _ := net.SplitHostPort(b.Addr)
	var c strings.Builder
	fmt.Fprintf(&c, "listener %s 127.0.0.1\n", port)
	fmt.Fprintf(&c, "persistence true\n")
	fmt.Fprintf(&c, "persistence_location %s/\n", b.dir)
	fmt.Fprintf(&c, "max_queued_messages 100000\n")
	fmt.Fprintf(&c, "max_inflight_messages 100\n")
	fmt.Fprintf(&c, "log_dest file %s\n", b.logFile)
	fmt.Fprintf(&c, "log_timestamp_format %%H:%%M:%%S\n")
	if os.Geteuid() == 0 {
		// As root, mosquitto drops to user mosquitto, which cannot write
		// the persistence to a t.TempDir() (mode 0700, owned by root).
		fmt.Fprintf(&c, "user root\n")
	}
	if len(b.opts.Users) == 0 {
		fmt.Fprintf(&c, "allow_anonymous true\n")
	} else {
		pw := filepath.Join(b.dir, "passwd")
		b.writePasswordFile(t, pw)
		fmt.Fprintf(&c, "allow_anonymous false\n")
		fmt.Fprintf(&c, "password_file %s\n", pw)
	}
	if err := os.WriteFile(b.conf, []byte(c.String()), 0o600); err != nil {
		t.Fatalf("mqtttest: %v", err)
	}
}

func (b *Broker) writePasswordFile(t testing.TB, path string) {
	t.Helper()
	bin, err := exec.LookPath("mosquitto_passwd")
	if err != nil {
		bin = filepath.Join(filepath.Dir(b.bin), "mosquitto_passwd")
		for _, p := range []string{bin, "/usr/bin/mosquitto_passwd", "/usr/sbin/mosquitto_passwd"} {
			if _, err := os.Stat(p); err == nil {
				bin = p
				break
			}
		}
	}
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatalf("mqtttest: %v", err)
	}
	for _, u := range sortedUsers(b.opts.Users) {
		out, err := exec.Command(bin, "-b", path, u, b.opts.Users[u]).CombinedOutput()
		if err != nil {
			t.Fatalf("mqtttest: mosquitto_passwd for user %q: %v: %s", u, err, out)
		}
	}
}

// process is one run of mosquitto.
type process struct {
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has exited
	err    error         // cmd.Wait's result, once exited is closed
}

func (b *Broker) startMosquitto() error {
	b.note("starting %s -c %s", b.bin, b.conf)
	p := &process{cmd: exec.Command(b.bin, "-c", b.conf), exited: make(chan struct{})}
	p.cmd.Dir = b.dir
	p.cmd.Stdout = b.log
	p.cmd.Stderr = b.log
	if err := p.cmd.Start(); err != nil {
		return err
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	deadline := time.Now().Add(startTimeout)
	for {
		conn, err := net.DialTimeout("tcp", b.Addr, time.Second)
		if err == nil {
			conn.Close()
			b.proc = p
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("mosquitto exited before it listened: %v", p.err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.kill()
			return fmt.Errorf("mosquitto does not accept connections after %v: %v", startTimeout, err)
		}
	}
}

func (b *Broker) stopMosquitto() error {
	p := b.proc
	b.proc = nil
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		p.kill()
		return fmt.Errorf("SIGTERM: %w", err)
	}
	select {
	case <-p.exited:
		b.note("mosquitto exited: %v", p.err)
		return nil
	case <-time.After(stopTimeout):
		p.kill()
		return fmt.Errorf("mosquitto did not exit within %v of SIGTERM; killed", stopTimeout)
	}
}

// kill kills the process and waits a little for it to go.
func (p *process) kill() {
	_ = p.cmd.Process.Kill()
	select {
	case <-p.exited:
	case <-time.After(stopTimeout):
	}
}

// --- mochi ---

func (b *Broker) startMochi() error {
	b.note("starting mochi on %s", b.Addr)
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumSessionExpiryInterval = math.MaxUint32
	srv := mqtt.New(&mqtt.Options{
		InlineClient: true,
		Capabilities: caps,
		Logger:       slog.New(slog.NewTextHandler(b.log, &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	var err error
	if len(b.opts.Users) == 0 {
		err = srv.AddHook(new(auth.AllowHook), nil)
	} else {
		ledger := &auth.Ledger{
			Users: auth.Users{},
			ACL:   auth.ACLRules{{}}, // anyone who got in may publish and subscribe anywhere
		}
		for u, p := range b.opts.Users {
			ledger.Users[u] = auth.UserRule{Username: auth.RString(u), Password: auth.RString(p)}
		}
		err = srv.AddHook(new(auth.Hook), &auth.Options{Ledger: ledger})
	}
	if err != nil {
		return err
	}
	// The port was just freed by a Stop, or by freeAddr; retry briefly in
	// case the kernel has not let go of it yet.
	deadline := time.Now().Add(startTimeout)
	for {
		err = srv.AddListener(listeners.NewTCP(listeners.Config{ID: "mqtttest", Address: b.Addr}))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, o := range b.observers {
		if err := srv.Subscribe(o.filter, o.id, o.mochiHandler); err != nil {
			_ = broker.CloseServer(srv)
			return fmt.Errorf("subscribe observer %q: %w", o.filter, err)
		}
	}
	if err := srv.Serve(); err != nil {
		_ = broker.CloseServer(srv)
		return err
	}
	b.srv = srv
	return nil
}

// --- observers ---

// Message is a message an Observer received.
type Message struct {
	Topic    string
	Payload  []byte
	Retained bool
}

// Observer records the messages of a subscription, across restarts of
// the broker.
type Observer struct {
	b      *Broker
	filter string
	id     int

	mu     sync.Mutex
	msgs   []Message
	notify chan struct{} // a message arrived; capacity 1

	client paho.Client // mosquitto
}

// Observe subscribes at QoS 1 to filter and records every message it
// receives, across restarts of the broker. The broker must be running.
//
// Mosquitto: a paho client with a fixed client ID and a persistent session
// (CleanSession false) that reconnects every 200ms while the broker is
// down and subscribes on each connect; messages published while it was
// away are delivered when it is back. It logs in as the first of
// Options.Users in sorted order, if any. Mochi: an inline subscription,
// made again on every Start before the server serves, so nothing
// published after a Start is missed.
func (b *Broker) Observe(t testing.TB, filter string) *Observer {
	t.Helper()
	b.mu.Lock()
	if !b.running {
		b.mu.Unlock()
		t.Fatalf("mqtttest: Observe(%q): the %s broker is stopped", filter, b.Kind)
	}
	b.nextID++
	o := &Observer{b: b, filter: filter, id: b.nextID, notify: make(chan struct{}, 1)}
	if b.Kind == Mochi {
		defer b.mu.Unlock()
		if err := b.srv.Subscribe(filter, o.id, o.mochiHandler); err != nil {
			t.Fatalf("mqtttest: Observe(%q): %v", filter, err)
		}
		b.observers = append(b.observers, o)
		return o
	}
	b.observers = append(b.observers, o)
	b.mu.Unlock()

	subscribed := make(chan error, 1)
	opts := paho.NewClientOptions().
		AddBroker(b.URL).
		SetClientID(fmt.Sprintf("mqtttest-observer-%d", o.id)).
		SetCleanSession(false).
		SetAutoReconnect(true).
		SetConnectRetryInterval(200 * time.Millisecond).
		SetMaxReconnectInterval(200 * time.Millisecond).
		SetConnectTimeout(2 * time.Second).
		SetKeepAlive(5 * time.Second).
		SetOrderMatters(true).
		// Queued messages of the session can come before the SUBACK:
		// record whatever arrives.
		SetDefaultPublishHandler(func(_ paho.Client, m paho.Message) {
			o.record(m.Topic(), m.Payload(), m.Retained())
		}).
		SetOnConnectHandler(func(c paho.Client) {
			tok := c.Subscribe(filter, 1, nil)
			go func() {
				var err error
				if !tok.WaitTimeout(connectTimeout) {
					err = errors.New("no SUBACK")
				} else {
					err = tok.Error()
				}
				if err != nil {
					b.note("observer %q: subscribe: %v", filter, err)
				}
				select {
				case subscribed <- err:
				default:
				}
			}()
		})
	if users := sortedUsers(b.opts.Users); len(users) > 0 {
		opts.SetUsername(users[0]).SetPassword(b.opts.Users[users[0]])
	}
	o.client = paho.NewClient(opts)
	t.Cleanup(func() { o.client.Disconnect(100) })
	tok := o.client.Connect()
	if !tok.WaitTimeout(connectTimeout) {
		t.Fatalf("mqtttest: Observe(%q): no CONNACK within %v", filter, connectTimeout)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("mqtttest: Observe(%q): connect: %v", filter, err)
	}
	select {
	case err := <-subscribed:
		if err != nil {
			t.Fatalf("mqtttest: Observe(%q): subscribe: %v", filter, err)
		}
	case <-time.After(connectTimeout):
		t.Fatalf("mqtttest: Observe(%q): not subscribed within %v", filter, connectTimeout)
	}
	return o
}

func (o *Observer) mochiHandler(_ *mqtt.Client, _ packets.Subscription, pk packets.Packet) {
	o.record(pk.TopicName, pk.Payload, pk.FixedHeader.Retain)
}

func (o *Observer) record(topic string, payload []byte, retained bool) {
	o.mu.Lock()
	o.msgs = append(o.msgs, Message{Topic: topic, Payload: bytes.Clone(payload), Retained: retained})
	o.mu.Unlock()
	select {
	case o.notify <- struct{}{}:
	default:
	}
}

// Messages returns a copy of the messages received so far, in arrival order.
func (o *Observer) Messages() []Message {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.msgs)
}

// WaitCount waits until at least n messages have arrived and returns them
// all; it fails the test, saying how many arrived, if they do not within
// the given time. Duplicates count: a QoS 1 message whose PUBACK had not
// reached the broker when it stopped is delivered again after the restart
// (see WaitUntil).
func (o *Observer) WaitCount(t testing.TB, n int, within time.Duration) []Message {
	t.Helper()
	return o.wait(t, within, fmt.Sprintf("%d messages", n), func(msgs []Message) bool { return len(msgs) >= n })
}

// WaitUntil waits until cond holds for the messages received so far and
// returns them; it fails the test, saying how many arrived, if cond does
// not hold within the given time. cond is called on every arrival.
func (o *Observer) WaitUntil(t testing.TB, within time.Duration, cond func(msgs []Message) bool) []Message {
	t.Helper()
	return o.wait(t, within, "the condition", cond)
}

func (o *Observer) wait(t testing.TB, within time.Duration, what string, cond func([]Message) bool) []Message {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		if msgs := o.Messages(); cond(msgs) {
			return msgs
		}
		select {
		case <-o.notify:
		case <-deadline.C:
			msgs := o.Messages()
			if cond(msgs) {
				return msgs
			}
			t.Fatalf("mqtttest: observer of %q on %s: waited %v for %s; %d messages arrived%s",
				o.filter, o.b.Kind, within, what, len(msgs), describeLast(msgs))
			return nil
		}
	}
}

func describeLast(msgs []Message) string {
	if len(msgs) == 0 {
		return ""
	}
	m := msgs[len(msgs)-1]
	p := m.Payload
	if len(p) > 64 {
		p = p[:64]
	}
	return fmt.Sprintf("; the last on %q: %q", m.Topic, p)
}

// --- publishing ---

// Publish publishes n messages at QoS 1 with a paho client of the given
// client ID (and username and password, if username is not empty) and
// returns when every one is acknowledged. Message i has the topic and
// payload gen(i) returns. Call it from the test's goroutine.
func (b *Broker) Publish(t testing.TB, clientID, username, password string, n int, gen func(i int) (topic string, payload []byte)) {
	t.Helper()
	opts := paho.NewClientOptions().
		AddBroker(b.URL).
		SetClientID(clientID).
		SetCleanSession(true).
		SetAutoReconnect(false).
		SetConnectTimeout(connectTimeout)
	if username != "" {
		opts.SetUsername(username).SetPassword(password)
	}
	c := paho.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(connectTimeout) {
		t.Fatalf("mqtttest: Publish as %q: no CONNACK within %v", clientID, connectTimeout)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("mqtttest: Publish as %q: connect: %v", clientID, err)
	}
	defer c.Disconnect(100)
	toks := make([]paho.Token, n)
	for i := range n {
		topic, payload := gen(i)
		toks[i] = c.Publish(topic, 1, false, payload)
	}
	deadline := time.Now().Add(publishTimeout)
	for i, tok := range toks {
		if !tok.WaitTimeout(time.Until(deadline)) {
			t.Fatalf("mqtttest: Publish as %q: message %d of %d not acknowledged within %v", clientID, i, n, publishTimeout)
		}
		if err := tok.Error(); err != nil {
			t.Fatalf("mqtttest: Publish as %q: message %d of %d: %v", clientID, i, n, err)
		}
	}
}

// --- helpers ---

// freeAddr returns a free 127.0.0.1 port, picked by the kernel. (Not
// nodetest.FreeAddr: nodetest imports the server, and so the packages
// whose tests use this one.)
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("mqtttest: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

func sortedUsers(users map[string]string) []string {
	us := make([]string, 0, len(users))
	for u := range users {
		us = append(us, u)
	}
	slices.Sort(us)
	return us
}
