package broker

import (
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// takeoverWait bounds how long a connection being taken over waits, in
// OnDisconnect, for mochi to mark it taken over. mochi marks it a few
// statements after closing it, once the hooks' OnUnsubscribed for its
// subscriptions have run (the bridge's may ask etcd); past the bound the
// hook logs and lets mochi go on.
const takeoverWait = 5 * time.Second

// TakeoverHook narrows a race in mochi v2.7.9's session takeover. A CONNECT
// with the client ID of a live connection closes the old connection
// (inheritClientSession: DisconnectClient), then marks it taken over, then
// adds the new client to the server's map. The old connection's goroutine,
// woken by the close, runs OnDisconnect and then, if the connection is not
// marked yet and its session expires, deletes its client ID from the map
// and its subscriptions from the topic index: when that delete lands after
// the new client was added, the live connection is gone from the map (no
// deliveries to it, no later takeover of it) although its socket stays
// open.
//
// The hook makes the old connection's OnDisconnect wait until mochi has
// marked it taken over, so mochi's check, and every later hook's
// (IsTakenOver), sees the takeover. It must be the server's first hook.
// What it cannot cover: an old connection that ended on its own and ran
// OnDisconnect just before the new CONNECT came can still delete the new
// client from the map; mochi calls no hook between its check and the
// delete.
type TakeoverHook struct {
	mqtt.HookBase
	server *mqtt.Server

	mu        sync.Mutex
	replacing map[*mqtt.Client]*mqtt.Client // connection being taken over -> the one taking it over
}

// NewTakeoverHook returns the hook for server; add it before any other.
func NewTakeoverHook(server *mqtt.Server) *TakeoverHook {
	return &TakeoverHook{server: server, replacing: make(map[*mqtt.Client]*mqtt.Client)}
}

// ID implements mqtt.Hook.
func (h *TakeoverHook) ID() string { return "weir-takeover" }

// Provides implements mqtt.Hook.
func (h *TakeoverHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnSessionEstablish, mqtt.OnSessionEstablished, mqtt.OnDisconnect:
		return true
	}
	return false
}

// OnSessionEstablish runs just before mochi takes over the connection that
// holds cl's client ID, if any: it records that connection.
func (h *TakeoverHook) OnSessionEstablish(cl *mqtt.Client, _ packets.Packet) {
	if old, ok := h.server.Clients.Get(cl.ID); ok && old != cl {
		h.mu.Lock()
		h.replacing[old] = cl
		h.mu.Unlock()
	}
}

// OnSessionEstablished runs once cl's takeover is done (the old connection
// is marked, cl is in the map): the record of it goes.
func (h *TakeoverHook) OnSessionEstablished(cl *mqtt.Client, _ packets.Packet) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for old, by := range h.replacing {
		if by == cl {
			delete(h.replacing, old)
		}
	}
}

// OnDisconnect holds a connection being taken over until mochi has marked
// it so.
func (h *TakeoverHook) OnDisconnect(cl *mqtt.Client, _ error, _ bool) {
	h.mu.Lock()
	_, replaced := h.replacing[cl]
	delete(h.replacing, cl)
	h.mu.Unlock()
	if !replaced {
		return
	}
	deadline := time.Now().Add(takeoverWait)
	for !cl.IsTakenOver() {
		if time.Now().After(deadline) {
			if h.Log != nil {
				h.Log.Warn("mqtt session takeover: the old connection was not marked taken over in time; it may remove the new one from the broker's map",
					"client", cl.ID, "waited", takeoverWait)
			}
			return
		}
		time.Sleep(time.Millisecond)
	}
}
