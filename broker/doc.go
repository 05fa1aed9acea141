// Package broker owns weir's embedded MQTT broker: a mochi-mqtt v2 server
// (MQTT 3.1.1 and 5) with weir's listeners, limits, and the one hook that
// authenticates clients and checks their publishes and subscribes against
// an ACL. The bridge (package bridge) adds its hooks and uses the inline
// client through Server; it never answers authentication or ACL checks.
//
//	TCP (mqtt.listen)        ─┐
//	TLS (mqtt.tls-listen)    ─┼─► mochi server ─► weir-auth hook ─► bridge hooks
//	WebSocket (mqtt.ws-listen)┘     (Server())     (this package)     (AddHook)
//
// # Lifecycle
//
// New builds the server, adds the auth hook and binds the listeners (so
// Addr, TLSAddr and WSAddr return real ports even for port 0), but serves
// nothing. Start serves. Close stops the listeners, sends MQTT 5 clients
// DISCONNECT 0x8B "server shutting down", closes every connection (also
// those that have not sent CONNECT yet), waits up to 5s for their
// goroutines, and stops the hooks; it is idempotent.
//
// # Listeners
//
//   - mqtt.listen: MQTT over TCP. Empty turns it off.
//   - mqtt.tls-listen: MQTT over TLS (1.2 or later) with mqtt.tls-cert-path
//     and mqtt.tls-key-path, or, when no mqtt.tls-*-path is set, the
//     top-level tls-cert-path, tls-key-path and tls-ca-path
//     (conf.Config.MQTTTLS). With a CA, clients must present a certificate
//     it verifies. That certificate does not replace the username and
//     password (or anonymous access) below, unless
//     mqtt.peer-cert-as-username is cn or san: then its Common Name or
//     first subject alternative name is the client's username, for the
//     ACL too, whatever username it sent, and no password is checked.
//     ReloadTLS reads the files again for the connections that follow.
//   - mqtt.ws-listen: MQTT over WebSocket (binary messages, subprotocol
//     "mqtt", any URL path, any Origin), without TLS.
//
// A new connection has 10s to finish its TLS or WebSocket handshake and send
// CONNECT; after CONNECT the keepalive deadline below applies, to reads and
// to writes (on WebSocket too: a client that stops reading is cut off).
//
// # Limits
//
//   - mqtt.max-packet-size: a packet larger than this closes the
//     connection; MQTT 5 clients are told the size in CONNACK (Maximum
//     Packet Size).
//   - mqtt.receive-maximum: QoS 1 and 2 publishes a client may have
//     unacknowledged; MQTT 5 clients are told it in CONNACK. mochi counts
//     a QoS 1 publish until its PUBACK (sent before the next packet is
//     read, unless a hook holds it back) and a QoS 2 one until its PUBREL,
//     and disconnects a client that goes beyond the limit (3.1.1 too).
//   - mqtt.max-inflight: QoS 1 and 2 messages the broker keeps
//     unacknowledged towards one client (at most 65535).
//   - mqtt.max-session-expiry: the longest a disconnected client's
//     persistent session is kept (mochi's default is 136 years); MQTT 5
//     clients asking more are told this one in CONNACK. A kept session
//     also holds its client ID for its user (see Authentication).
//   - mqtt.max-keepalive: a client asking for a longer keepalive, or for
//     none (0), is given this one. MQTT 5 clients are told so in CONNACK
//     (Server Keep Alive). A connection silent for 1.5 times its keepalive
//     (in whole seconds, rounded down) is closed, which is how 3.1.1
//     clients, who cannot be told, learn of it.
//   - Topic aliases: clients may not use them (Topic Alias Maximum 0,
//     which mochi never announces in CONNACK: absent means 0); an MQTT 5
//     client sending one is disconnected with 0x94 "topic alias invalid".
//     mochi checks the ACL before it resolves an alias, and registers an
//     alias it has not seen with an empty topic, so with aliases the ACL
//     would judge the wrong topic.
//   - Password checks (bcrypt, tens of milliseconds of CPU each) run at
//     most GOMAXPROCS at a time; further CONNECTs wait for their turn.
//
// # Authentication
//
// Without mqtt.auth-file no username is checked: when mqtt.allow-anonymous
// is true every client connects (with or without a username, which is
// taken as given) and may publish and subscribe to every topic; when it is
// false none does.
//
// With mqtt.auth-file, a client giving a username must be one of the
// file's users and give its password (checked with bcrypt); a client
// giving no username connects only when mqtt.allow-anonymous is true. A
// refused client gets CONNACK 0x86 "bad username or password" (MQTT 5) or
// 0x05 "not authorized" (3.1.1, mochi's mapping of 0x86). bcrypt reads only
// a password's first 72 bytes, so a longer password is refused (after a
// check as long as a real one).
//
// With mqtt.auth-file, a client ID's session belongs to the username that
// holds it (anonymous clients count as the username ""): a CONNECT whose
// client ID is held, by a connected client or by a persistent session,
// under another username is refused with CONNACK 0x87 "not authorized"
// (0x05 on 3.1.1), whatever its clean start flag. Taking the session over
// would otherwise hand the newcomer the holder's subscriptions (also
// durable shared ones), which the ACL granted to the holder, and its
// unacknowledged messages. The holder's own user takes it over or resumes
// it as MQTT says. Client IDs are thus first come, first served until the
// session ends (a clean session on disconnect, a persistent one when it
// expires). The ID "inline" (the broker's inline client) is never given.
//
// # The auth file
//
// mqtt.auth-file is YAML:
//
//	users:
//	  - username: device1
//	    password: $2a$10$N9qo8uLOickgx2ZMRZoMye...   # bcrypt hash (weir mqtt passwd)
//	  - username: admin
//	    password: $2a$10$...
//	acl:
//	  - username: device1            # optional: a user, or "*" any user with a username
//	    clientid: sensor-7           # optional: a client ID, or "*" any
//	    publish: ["devices/%c/#"]    # topic filters this rule lets its clients publish to
//	    subscribe: ["commands/%u/#"] # topic filters it lets them subscribe to
//	  - username: admin
//	    publish: ["#"]
//	    subscribe: ["#"]
//	  - publish: ["public/#"]        # no username: every client, anonymous ones too
//	    subscribe: ["public/#"]
//
// The file is read once, by New. Every problem is reported, each as
// "mqtt.auth-file: line N: ...", and New fails: an unknown or repeated
// field, a password that is not a bcrypt hash (plain text is refused), a
// user listed twice or without a username or password, a rule naming a
// user not in users, a rule with neither publish nor subscribe, and a bad
// topic filter. An empty file has no users and no rules.
//
// # ACL semantics
//
// With an auth file, everything not granted is denied. Rules only grant,
// so their order does not matter: a client may publish to a topic (or
// subscribe to a filter) when some rule that applies to it lists a publish
// (subscribe) filter covering it.
//
//   - A rule applies to a client when its username matches (absent: every
//     client, anonymous too; "*": every client that gave a username) and
//     its clientid matches (absent or "*": every client).
//   - A publish filter covers a topic when it matches it as MQTT matches
//     (+ one level, # the rest and the parent: a/# covers a).
//   - A subscribe filter covers a subscription filter when it matches every
//     topic the subscription could: a/# covers a/+/b, a/+ does not cover
//     a/#, a/b does not cover a/+. A shared subscription
//     $share/{group}/{filter} is checked as {filter}; write ACL filters
//     without $share.
//   - As in MQTT, + or # in an ACL filter's first level does not match a
//     topic starting with $ (such as $SYS): grant those explicitly
//     ($SYS/#).
//   - In a filter, %c stands for the client ID, %u for the username and %%
//     for a %; they may appear anywhere in a level. A value is substituted
//     literally, and one that could widen or retarget the filter never
//     matches: a filter using %c (%u) covers nothing for a client whose ID
//     (username) is empty, contains +, # or /, or starts with $. Anonymous
//     clients thus never match %u.
//   - The subscribe filters are also checked for each message the broker
//     delivers to a client (with the message's topic), so a client only
//     receives topics it may subscribe to.
//   - The inline client (Server().Publish) bypasses the ACL.
//
// A denied subscribe gets SUBACK 0x87 "not authorized" (MQTT 5) or 0x80
// (3.1.1). A denied publish at QoS 0 is dropped silently; at QoS 1 or 2 an
// MQTT 5 client gets PUBACK or PUBREC 0x87 and stays connected, while a
// 3.1.1 client, which has no negative acknowledgement, is disconnected.
// mochi does all of these once the hook says no. A will is a publish too,
// but mochi sends wills without asking the ACL (or the OnPublish hooks),
// so the broker checks the will topic when the client connects and refuses
// a denied one with CONNACK 0x87 "not authorized" (0x05 on 3.1.1).
//
// # Session takeover
//
// A CONNECT with the client ID of a live connection takes it over. mochi
// v2.7.9 closes the old connection before it marks it taken over, so the
// old connection's goroutine could run OnDisconnect unmarked and then
// delete the client ID from mochi's map after the new connection was
// added: the new connection stayed open but got no deliveries. The first
// hook, weir-takeover (TakeoverHook), holds the old connection's
// OnDisconnect until mochi has marked it; servers built without New (the
// bridge's tests) add it first too.
//
// # Metrics
//
// With Options.Metrics set, a hook added right after the auth hook (so it
// sees every packet before a bridge hook can reject it) counts network
// clients' connections (weir_mqtt_connections_total), PUBLISH packets in
// and out by QoS (weir_mqtt_publishes_received_total, _sent_total), and
// acks: those written to publishers, by packet and success or error
// (weir_mqtt_acks_sent_total: the bridge's PUBACK/PUBREC after commit), and
// those subscribers send (weir_mqtt_acks_received_total). mochi's own
// counters give the clients connected now (weir_mqtt_connections),
// subscriptions, bytes, and the messages dropped instead of delivered
// (weir_mqtt_dropped_total{reason}: outbound_queue_full for a slow
// subscriber, inflight_full for a full mqtt.max-inflight window). The
// inline client is not counted.
package broker
