package broker

import (
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"runtime"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"golang.org/x/crypto/bcrypt"

	"github.com/weir-log/weir/internal/tlsfile"
)

// maxPasswordLen is the longest password bcrypt reads: it ignores the
// bytes after it, so a longer one is refused rather than matched on its
// prefix.
const maxPasswordLen = 72

// authHook is weir's only hook answering OnConnectAuthenticate and
// OnACLCheck (mochi ORs those across hooks, so a second one answering them
// would widen access). It also caps keepalives and tells MQTT 5 clients
// the largest packet the broker accepts.
type authHook struct {
	mqtt.HookBase
	log            *slog.Logger
	server         *mqtt.Server // the sessions a CONNECT would take over
	allowAnonymous bool
	auth           *authFile     // nil: no auth file, everyone may do everything
	certAsUsername string        // "cn", "san": mqtt.peer-cert-as-username; "" off
	maxKeepalive   uint16        // seconds; 0 no cap
	maxPacketSize  uint32        // bytes; 0 no limit
	bcryptSlots    chan struct{} // bounds the bcrypt compares running at once
}

func newAuthHook(log *slog.Logger, server *mqtt.Server) *authHook {
	return &authHook{log: log, server: server, bcryptSlots: make(chan struct{}, runtime.GOMAXPROCS(0))}
}

// ID implements mqtt.Hook.
func (h *authHook) ID() string { return "weir-auth" }

// Provides implements mqtt.Hook. mochi asks it for every event.
func (h *authHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnect, mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnPacketEncode:
		return true
	}
	return false
}

// OnConnect caps the keepalive. mochi has parsed the CONNECT already
// (State.Keepalive holds the client's value) and, after this hook, sets the
// connection's deadline to 1.5 times State.Keepalive; ServerKeepalive makes
// it send MQTT 5 clients the Server Keep Alive property in the CONNACK.
func (h *authHook) OnConnect(cl *mqtt.Client, pk packets.Packet) error {
	if h.maxKeepalive > 0 && (cl.State.Keepalive == 0 || cl.State.Keepalive > h.maxKeepalive) {
		cl.State.Keepalive = h.maxKeepalive
		cl.State.ServerKeepalive = true
	}
	return nil
}

// OnConnectAuthenticate decides whether a client may connect. mochi answers
// false with CONNACK "bad username or password" (0x86), which it turns
// into 0x05 "not authorized" for 3.1.1 clients.
func (h *authHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	user := string(pk.Connect.Username)
	refuse := func(reason string) bool {
		h.log.Info("mqtt connection refused", "reason", reason, "client", cl.ID, "username", user, "remote", cl.Net.Remote, "listener", cl.Net.Listener)
		return false
	}
	if cert := h.clientCert(cl); cert != nil {
		// The certificate, verified in the TLS handshake, authenticates
		// the client; its identity replaces the username it sent.
		if user = tlsfile.Identity(cert, h.certAsUsername); user == "" {
			return refuse("client certificate names no " + h.certAsUsername + " for mqtt.peer-cert-as-username")
		}
		cl.Properties.Username = []byte(user)
		pk.Connect.Username = cl.Properties.Username
		return h.sessionAllowed(cl, user) && h.willAllowed(cl, pk)
	}
	if user == "" || h.auth == nil {
		// Without an auth file a username cannot be checked: the client
		// is anonymous as far as access goes.
		if !h.allowAnonymous {
			if user != "" {
				return refuse("no mqtt.auth-file to check the username against")
			}
			return refuse("anonymous")
		}
		return h.sessionAllowed(cl, user) && h.willAllowed(cl, pk)
	}
	hash, ok := h.auth.users[user]
	if !ok || len(pk.Connect.Password) > maxPasswordLen {
		// As long as a real check, whatever the reason.
		_ = h.compare(h.auth.dummy, pk.Connect.Password)
		if !ok {
			return refuse("unknown user")
		}
		return refuse("password longer than 72 bytes")
	}
	if h.compare(hash, pk.Connect.Password) != nil {
		return refuse("wrong password")
	}
	return h.sessionAllowed(cl, user) && h.willAllowed(cl, pk)
}

// clientCert returns the verified client certificate of cl's TLS
// connection when mqtt.peer-cert-as-username is on, else nil.
func (h *authHook) clientCert(cl *mqtt.Client) *x509.Certificate {
	if h.certAsUsername == "" {
		return nil
	}
	tc, ok := cl.Net.Conn.(*tls.Conn)
	if !ok {
		return nil
	}
	return tlsfile.VerifiedLeaf(tc.ConnectionState())
}

// compare is bcrypt.CompareHashAndPassword, at most GOMAXPROCS at once:
// each costs tens of milliseconds of CPU, so a flood of CONNECTs waits
// here instead of starving everything else.
func (h *authHook) compare(hash, password []byte) error {
	h.bcryptSlots <- struct{}{}
	defer func() { <-h.bcryptSlots }()
	return bcrypt.CompareHashAndPassword(hash, password)
}

// sessionAllowed checks, when an auth file is set, that the client ID's
// session, if any (a connected client or a persistent session), belongs
// to the same username (anonymous counts as the username ""): taking it
// over would give the client the session's subscriptions and messages,
// which the ACL granted to someone else. A refused client gets CONNACK
// "not authorized".
func (h *authHook) sessionAllowed(cl *mqtt.Client, user string) bool {
	if h.auth == nil {
		return true
	}
	held, ok := h.server.Clients.Get(cl.ID)
	if !ok || (!held.Net.Inline && string(held.Properties.Username) == user) {
		return true
	}
	h.notAuthorized(cl, "client ID held by another user", "username", user, "held_by", string(held.Properties.Username))
	return false
}

// willAllowed checks the will topic against the publish ACL: mochi
// publishes a will without asking OnACLCheck (or OnPublish), so an
// unchecked will would let a client publish anywhere. A client whose will
// is denied is refused with CONNACK "not authorized".
func (h *authHook) willAllowed(cl *mqtt.Client, pk packets.Packet) bool {
	if !pk.Connect.WillFlag || h.auth == nil {
		return true
	}
	id := identity{clientID: cl.ID, username: string(pk.Connect.Username)}
	if h.auth.rules.allowed(id, pk.Connect.WillTopic, true) {
		return true
	}
	h.notAuthorized(cl, "will topic not authorized", "username", id.username, "will_topic", pk.Connect.WillTopic)
	return false
}

// notAuthorized refuses a connecting client with CONNACK "not authorized"
// (0x87; 0x05 on 3.1.1), which this hook sends itself: mochi's own answer
// to false, "bad username or password", would mislead. The connection is
// then closed, so mochi's answer is never written.
func (h *authHook) notAuthorized(cl *mqtt.Client, reason string, attrs ...any) {
	h.log.Info("mqtt connection refused", append([]any{"reason", reason, "client", cl.ID,
		"remote", cl.Net.Remote, "listener", cl.Net.Listener}, attrs...)...)
	code := packets.ErrNotAuthorized
	if cl.Properties.ProtocolVersion < 5 {
		code = packets.Err3NotAuthorized
	}
	ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connack}, ReasonCode: code.Code}
	if cl.Properties.ProtocolVersion == 5 {
		ack.Properties.ReasonString = code.Reason
	}
	_ = cl.WritePacket(ack)
	cl.Stop(code)
}

// OnACLCheck decides whether cl may publish to topic (write) or subscribe
// to the filter topic, and is asked again for each message delivered to cl
// (with the message's topic). mochi answers a refusal natively: see the
// package doc.
func (h *authHook) OnACLCheck(cl *mqtt.Client, topic string, write bool) bool {
	if h.auth == nil || cl.Net.Inline {
		return true
	}
	return h.auth.rules.allowed(identity{clientID: cl.ID, username: string(cl.Properties.Username)}, topic, write)
}

// OnPacketEncode adds Maximum Packet Size to a successful MQTT 5 CONNACK;
// mochi enforces the limit but does not announce it.
func (h *authHook) OnPacketEncode(cl *mqtt.Client, pk packets.Packet) packets.Packet {
	if pk.FixedHeader.Type == packets.Connack && pk.ReasonCode < packets.ErrUnspecifiedError.Code &&
		cl.Properties.ProtocolVersion == 5 && h.maxPacketSize > 0 {
		pk.Properties.MaximumPacketSize = h.maxPacketSize
	}
	return pk
}
