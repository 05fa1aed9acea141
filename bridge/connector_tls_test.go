package bridge_test

import (
	"crypto/tls"
	"strings"
	"testing"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/stretchr/testify/require"

	"github.com/weir-log/weir/broker"
	"github.com/weir-log/weir/conf"
	"github.com/weir-log/weir/internal/nodetest"
	"github.com/weir-log/weir/internal/tlsfile"
)

// An ingest connector reaches a broker that serves only TLS and only a
// known user: with the broker's CA and the user's password it stores what
// is published there; without the CA it logs the certificate error and
// retries.
func TestIngestConnectorOverTLSWithPassword(t *testing.T) {
	certPath, _, pair, err := tlsfile.SelfSigned(t.TempDir())
	require.NoError(t, err)
	srv := mqtt.New(&mqtt.Options{InlineClient: true})
	require.NoError(t, srv.AddHook(new(auth.Hook), &auth.Options{Ledger: &auth.Ledger{
		Auth: auth.AuthRules{{Username: "weir", Password: "s3cret", Allow: true}},
		ACL:  auth.ACLRules{{Username: "weir", Filters: auth.Filters{"#": auth.ReadWrite}}},
	}}))
	addr := nodetest.FreeAddr(t)
	require.NoError(t, srv.AddListener(listeners.NewTCP(listeners.Config{ID: "tls", Address: addr,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}})))
	require.NoError(t, srv.Serve())
	t.Cleanup(func() { broker.CloseServer(srv) })

	n := nodetest.Start(t)
	r := startIngestConn(t, n, ingestConnConfig("mqtts://"+addr, func(ic *conf.IngestConnector) {
		ic.TLSCAPath = certPath
		ic.Username, ic.Password = "weir", "s3cret"
	}))
	r.waitSubscribed(t, 1)
	require.NoError(t, srv.Publish("dev/d1/temp", []byte("21.5"), false, 1))
	require.Eventually(t, func() bool { return len(streamRecords(t, n, "devs")) == 1 }, waitFor, 10*time.Millisecond)
	rec := streamRecords(t, n, "devs")[0]
	require.Equal(t, "d1", rec.GetHeader().GetKey())
	require.Equal(t, "21.5", string(rec.GetPayload()))

	noCA := startIngestConn(t, n, ingestConnConfig("mqtts://"+addr, func(ic *conf.IngestConnector) {
		ic.ClientID = "weir-no-ca"
		ic.Username, ic.Password = "weir", "s3cret"
	}))
	require.Eventually(t, func() bool {
		return strings.Count(noCA.log.String(), "certificate signed by unknown authority") >= 2
	}, waitFor, 10*time.Millisecond, "want repeated certificate errors in the log:\n%s", noCA.log)
}
