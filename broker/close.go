package broker

import (
	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// CloseServer shuts a mochi server down as its Close does, without the
// sweep of each listener's clients that can deadlock it for good.
//
// mochi v2.7.9's Clients.GetByListener, which Server.Close calls for every
// listener, takes the clients' read lock twice (once more through Len). A
// client that connects or leaves in between asks for the write lock, the
// second read lock queues behind it, and the broker, and the node's
// shutdown with it, hangs (mochi-mqtt/server#488; fixes #489 and #507 are
// not released). CloseServer closes the listeners itself with a sweep that
// locks once (Clients.GetAll), removes them, and only then calls Close,
// which finds no listener left. Use it instead of Server.Close.
func CloseServer(s *mqtt.Server) error {
	var closed []string
	s.Listeners.CloseAll(func(listener string) {
		closed = append(closed, listener)
		for _, cl := range s.Clients.GetAll() {
			if cl.Net.Listener == listener && !cl.Closed() {
				_ = s.DisconnectClient(cl, packets.ErrServerShuttingDown)
			}
		}
	})
	for _, id := range closed {
		s.Listeners.Delete(id)
	}
	return s.Close()
}
