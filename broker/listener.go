package broker

import (
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mochi-mqtt/server/v2/listeners"
)

const (
	// connectTimeout bounds how long a new connection may take to finish
	// its TLS or WebSocket handshake and send CONNECT. mochi sets no
	// deadline before CONNECT; after it, mochi's own keepalive deadline
	// replaces this one.
	connectTimeout = 10 * time.Second
	// closeWait bounds how long Close waits for connection goroutines to
	// end after it has closed their connections.
	closeWait = 5 * time.Second
)

// listener is a mochi listener (listeners.Listener) for TCP, TLS or
// WebSocket. mochi has its own, but its WebSocket listener binds only in
// Serve (so port 0 cannot be learned before) and none of them bounds the
// time to CONNECT or waits for its connections on Close. This one binds in
// Init, gives each connection connectTimeout to send CONNECT, and on Close
// closes every connection it accepted and waits for their goroutines.
type listener struct {
	id        string
	addr      string      // as configured
	tlsConfig *tls.Config // TLS listener only
	ws        bool        // WebSocket listener

	log       *slog.Logger
	ln        net.Listener          // bound by Init
	http      *http.Server          // WebSocket only, made by Init
	establish listeners.EstablishFn // set by Serve before it accepts
	upgrader  websocket.Upgrader    // WebSocket only
	wg        sync.WaitGroup        // Serve and each connection; Add only under mu while !closed

	mu     sync.Mutex // guards the fields below
	closed bool
	conns  map[net.Conn]struct{} // open connections
}

func newListener(id, addr string, tlsConfig *tls.Config, ws bool) *listener {
	return &listener{
		id:        id,
		addr:      addr,
		tlsConfig: tlsConfig,
		ws:        ws,
		conns:     map[net.Conn]struct{}{},
		upgrader: websocket.Upgrader{
			Subprotocols: []string{"mqtt"},
			// Clients authenticate in CONNECT, not with cookies, so a
			// page from any origin may connect.
			CheckOrigin:      func(*http.Request) bool { return true },
			HandshakeTimeout: connectTimeout,
		},
	}
}

// ID implements listeners.Listener.
func (l *listener) ID() string { return l.id }

// Protocol implements listeners.Listener.
func (l *listener) Protocol() string {
	switch {
	case l.ws:
		return "ws"
	case l.tlsConfig != nil:
		return "tls"
	}
	return "tcp"
}

// Address implements listeners.Listener: the bound address once Init has
// run.
func (l *listener) Address() string {
	if l.ln != nil {
		return l.ln.Addr().String()
	}
	return l.addr
}

// Init implements listeners.Listener: it binds the address.
func (l *listener) Init(log *slog.Logger) error {
	l.log = log
	ln, err := net.Listen("tcp", l.addr)
	if err != nil {
		return err
	}
	if l.tlsConfig != nil {
		ln = tls.NewListener(ln, l.tlsConfig)
	}
	l.ln = ln
	if l.ws {
		l.http = &http.Server{
			Handler:           http.HandlerFunc(l.upgrade),
			ReadHeaderTimeout: connectTimeout,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		}
	}
	return nil
}

// begin registers a goroutine (and c, when not nil) with l, unless l is
// closed.
func (l *listener) begin(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.wg.Add(1)
	if c != nil {
		l.conns[c] = struct{}{}
	}
	return true
}

func (l *listener) end(c net.Conn) {
	if c != nil {
		l.mu.Lock()
		delete(l.conns, c)
		l.mu.Unlock()
	}
	l.wg.Done()
}

// Serve implements listeners.Listener: it accepts connections until Close.
func (l *listener) Serve(establish listeners.EstablishFn) {
	if !l.begin(nil) {
		return
	}
	defer l.end(nil)
	l.establish = establish
	if l.ws {
		if err := l.http.Serve(l.ln); !errors.Is(err, http.ErrServerClosed) {
			l.log.Error("mqtt websocket listener failed", "error", err)
		}
		return
	}
	var backoff time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if l.isClosed() {
				return
			}
			// Out of file descriptors and the like: wait and retry, as
			// net/http does, rather than stop listening for good.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			l.log.Warn("mqtt accept failed", "error", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		if !l.begin(c) {
			_ = c.Close()
			return
		}
		go l.handle(c)
	}
}

func (l *listener) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// handle runs one connection (registered with begin) through mochi.
func (l *listener) handle(c net.Conn) {
	defer l.end(c)
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(connectTimeout))
	if err := l.establish(l.id, c); err != nil {
		l.log.Debug("mqtt connection ended", "error", err, "remote", c.RemoteAddr().String())
	}
}

// upgrade is the WebSocket listener's HTTP handler.
func (l *listener) upgrade(w http.ResponseWriter, r *http.Request) {
	ws, err := l.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // Upgrade has answered the request
	}
	c := &wsConn{Conn: ws.NetConn(), ws: ws}
	if !l.begin(c) {
		_ = c.Close()
		return
	}
	l.handle(c)
}

// Close implements listeners.Listener: it stops accepting, disconnects the
// listener's MQTT clients (closeClients sends MQTT 5 clients DISCONNECT
// "server shutting down"), closes every other connection it accepted, and
// waits up to closeWait for their goroutines to end.
func (l *listener) Close(closeClients listeners.CloseFn) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	l.mu.Unlock()

	if l.http != nil {
		_ = l.http.Close() // closes l.ln; hijacked connections are ours
	} else {
		_ = l.ln.Close()
	}
	closeClients(l.id)
	l.mu.Lock()
	for c := range l.conns {
		_ = c.Close()
	}
	l.mu.Unlock()

	done := make(chan struct{})
	go func() {
		l.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(closeWait):
		l.log.Warn("mqtt listener closed with connections still ending", "waited", closeWait)
	}
}

// wsConn is a net.Conn carrying MQTT in binary WebSocket messages (one
// message may hold many packets, and a packet may span messages). Reads
// come from one goroutine; mochi serializes writes under the client's lock.
//
// Write deadlines: gorilla sets the connection's write deadline to its own
// (Conn.SetWriteDeadline) before every frame it writes, which would wipe
// the one mochi sets (1.5 times the keepalive, refreshed on every read),
// so a client that stops reading would block mochi's writer for ever.
// wsConn keeps mochi's write deadline and hands it to gorilla in Write;
// gorilla forbids SetWriteDeadline concurrently with a write, so both
// happen under writing, while a new deadline (from mochi's reader) only
// waits for mu.
type wsConn struct {
	net.Conn // the underlying connection: addresses, read deadlines
	ws       *websocket.Conn
	r        io.Reader // the message being read, if any

	writing       sync.Mutex // serializes Write
	mu            sync.Mutex // guards writeDeadline
	writeDeadline time.Time
}

// SetDeadline implements net.Conn: the read deadline now, the write
// deadline from the next Write on.
func (c *wsConn) SetDeadline(t time.Time) error {
	_ = c.SetWriteDeadline(t)
	return c.Conn.SetReadDeadline(t)
}

// SetWriteDeadline implements net.Conn: the deadline applies from the
// next Write on.
func (c *wsConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.writeDeadline = t
	c.mu.Unlock()
	return nil
}

var errNotBinary = errors.New("broker: websocket message is not binary")

func (c *wsConn) Read(p []byte) (int, error) {
	for {
		if c.r == nil {
			op, r, err := c.ws.NextReader()
			if err != nil {
				return 0, err
			}
			if op != websocket.BinaryMessage {
				return 0, errNotBinary
			}
			c.r = r
		}
		n, err := c.r.Read(p)
		if errors.Is(err, io.EOF) {
			c.r = nil
			if n == 0 {
				continue // next message
			}
			err = nil
		}
		return n, err
	}
}

func (c *wsConn) Write(p []byte) (int, error) {
	c.writing.Lock()
	defer c.writing.Unlock()
	c.mu.Lock()
	d := c.writeDeadline
	c.mu.Unlock()
	if err := c.ws.SetWriteDeadline(d); err != nil {
		return 0, err
	}
	if err := c.ws.WriteMessage(websocket.BinaryMessage, p); err != nil {
		return 0, err
	}
	return len(p), nil
}
