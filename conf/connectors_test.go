package conf

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestConnectorsFromYAML(t *testing.T) {
	file := writeConfig(t, `
connectors:
  ingest:
    - name: emqx-in
      url: tcp://127.0.0.1:1883
      username: weir
      password: secret
      filters: ["factory/#"]
      routes: [{filter: "factory/+/temp", stream: temps, key: "${topic[1]}", create: true}]
  egress:
    - name: out
      url: mqtts://broker.example:8883
      stream: temps
      topic: "weir/${key}"
      max-inflight: 10
      reconnect-max: 5s
`)
	c, err := Load(file, nil, nil)
	require.NoError(t, err)
	require.Len(t, c.Connectors.Ingest, 1)
	in := c.Connectors.Ingest[0]
	assert.Equal(t, "weir-emqx-in", in.ClientID, "client-id defaults to weir-<name>")
	assert.Equal(t, []string{"factory/#"}, in.Filters)
	assert.Equal(t, []Route{{Filter: "factory/+/temp", Stream: "temps", Key: "${topic[1]}", Create: true}}, in.Routes)
	assert.Equal(t, 1000, in.MaxPending)
	assert.Equal(t, 30*time.Second, in.Keepalive)
	assert.Equal(t, time.Second, in.ReconnectMin)
	out := c.Connectors.Egress[0]
	assert.Equal(t, "weir-egress-out", out.Subscription)
	assert.Equal(t, "latest", out.Offset)
	assert.Equal(t, 10, out.MaxInflight)
	assert.Equal(t, 5*time.Second, out.ReconnectMax)
	assert.Equal(t, 60*time.Second, out.AckTimeout)

	// The same list from an env var, as YAML in flow style.
	c, err = Load("", []string{`WEIR_CONNECTORS_EGRESS=[{name: e, url: "tcp://h:1883", stream: s}]`}, nil)
	require.NoError(t, err)
	assert.Equal(t, "s", c.Connectors.Egress[0].Stream)
	assert.Equal(t, "${topic}", c.Connectors.Egress[0].Topic)
	assert.Contains(t, keyByPath["connectors.egress"].format(keyByPath["connectors.egress"].field(c)), `stream: s`)
}

func TestConnectorsRefuseTypos(t *testing.T) {
	_, err := Load(writeConfig(t, "connectors:\n  ingest:\n    - {name: a, url: \"tcp://h:1\", fitlers: [x]}\n"), nil, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "connectors.ingest")
	assert.Contains(t, err.Error(), "fitlers")
}

func TestConnectorsValidate(t *testing.T) {
	dir := t.TempDir()
	c := Default()
	c.Connectors.Ingest = []IngestConnector{
		{Name: "a", Remote: Remote{URL: "http://h:1"}},
		{Name: "a", Remote: Remote{URL: "tcp://h:1", Password: "p", TLSCAPath: filepath.Join(dir, "ca.pem")}, Filters: []string{"x"}},
	}
	c.Connectors.Egress = []EgressConnector{
		{Name: "bad name", Remote: Remote{URL: "mqtts://h", TLSCertPath: filepath.Join(dir, "c.pem")}, Offset: "middle"},
	}
	c.fillDerived()
	err := c.Validate()
	require.Error(t, err)
	for _, want := range []string{
		`connectors.ingest[0] (a).url: "http://h:1": scheme must be tcp, mqtt, ssl, tls, mqtts, ws or wss`,
		`connectors.ingest[0] (a).filters: must name at least one topic filter`,
		`connectors.ingest[1].name: "a" is also the name of connectors.ingest[0]`,
		`connectors.ingest[1] (a).password: is set without a username`,
		`connectors.ingest[1] (a).url: "tcp://h:1" is not a TLS url`,
		`connectors.ingest[1] (a).tls-ca-path: stat ` + filepath.Join(dir, "ca.pem"),
		`connectors.egress[0].name: "bad name": use letters, digits, - and _ only`,
		`connectors.egress[0] (bad name).url: "mqtts://h": want host:port`,
		`connectors.egress[0] (bad name).stream: must name the stream`,
		`connectors.egress[0] (bad name).offset: "middle" is not one of earliest, latest`,
		`connectors.egress[0] (bad name).tls-cert-path: tls-cert-path and tls-key-path go together`,
	} {
		assert.Contains(t, err.Error(), want)
	}

	c = Default()
	c.Connectors.Ingest = []IngestConnector{{Name: "a", Remote: Remote{URL: "tcp://user:secret@h:1883"}, Filters: []string{"x"}},
		{Name: "b", Remote: Remote{URL: "tcp://H:1884", ClientID: "same"}, Filters: []string{"x"}}}
	c.Connectors.Egress = []EgressConnector{{Name: "c", Remote: Remote{URL: "tcp://h:1884", ClientID: "same"}, Stream: "s"},
		{Name: "d", Remote: Remote{URL: "tcp://other:1884", ClientID: "same"}, Stream: "s"}}
	c.fillDerived()
	err = c.Validate()
	require.Error(t, err)
	assert.Contains(t, err.Error(), `connectors.ingest[0] (a).url: "tcp://user:xxxxx@h:1883": put credentials in username and password`)
	assert.NotContains(t, err.Error(), "secret")
	assert.Contains(t, err.Error(), `connectors.egress[0] (c).client-id: "same" is also the client ID of connectors.ingest[1] (b) at the same broker (h:1884)`)
	assert.NotContains(t, err.Error(), "egress[1] (d).client-id", "another broker may have the same client ID")

	ok := Default()
	ok.Connectors.Ingest = []IngestConnector{{Name: "in", Remote: Remote{URL: "tcp://127.0.0.1:1883"}, Filters: []string{"#"}}}
	ok.Connectors.Egress = []EgressConnector{{Name: "out", Remote: Remote{URL: "wss://broker:443/mqtt"}, Stream: "s"}}
	require.NoError(t, ok.WithDefaults().Validate())
}
