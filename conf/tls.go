package conf

import (
	"fmt"

	"github.com/weir-log/weir/internal/tlsfile"
)

// APITLS returns the files of the gRPC API, which nodes also present to
// and verify each other with.
func (c *Config) APITLS() tlsfile.Files {
	return tlsfile.Files{
		CertPath: c.TLSCertPath, KeyPath: c.TLSKeyPath, CAPath: c.TLSCAPath,
		CertKey: "tls-cert-path", KeyKey: "tls-key-path", CAKey: "tls-ca-path",
	}
}

// MQTTTLS returns the files of the MQTT TLS listener: its own
// mqtt.tls-*-path keys, or the top-level ones when none of those is set.
func (c *Config) MQTTTLS() tlsfile.Files {
	if !c.MQTT.ownTLS() {
		return c.APITLS()
	}
	m := c.MQTT
	return tlsfile.Files{
		CertPath: m.TLSCertPath, KeyPath: m.TLSKeyPath, CAPath: m.TLSCAPath,
		CertKey: "mqtt.tls-cert-path", KeyKey: "mqtt.tls-key-path", CAKey: "mqtt.tls-ca-path",
	}
}

// ownTLS reports whether any mqtt.tls-*-path key is set.
func (m *MQTT) ownTLS() bool {
	return m.TLSCertPath != "" || m.TLSKeyPath != "" || m.TLSCAPath != ""
}

// tlsProblems checks the TLS keys: an endpoint that is on has its
// certificate and key, every file named exists, and no file is named that
// nothing would use, since a forgotten enable-tls would otherwise serve
// plaintext to clients that believe they are protected.
func (c *Config) tlsProblems(ch *checker) {
	m := &c.MQTT
	apiUsed := c.EnableTLS || (m.TLSListen != "" && !m.ownTLS())
	if apiUsed {
		why := "enable-tls is true"
		if !c.EnableTLS {
			why = "mqtt.tls-listen is set and no mqtt.tls-*-path is"
		}
		ch.tlsFiles(c.APITLS(), why)
	} else {
		ch.unusedTLSFiles(c.APITLS(), "enable-tls is false and mqtt.tls-listen does not use it: set enable-tls: true, or remove it")
	}
	if m.ownTLS() {
		if m.TLSListen != "" {
			ch.tlsFiles(c.MQTTTLS(), "an mqtt.tls-*-path is set")
		} else {
			ch.unusedTLSFiles(c.MQTTTLS(), "mqtt.tls-listen is empty: set mqtt.tls-listen, or remove it")
		}
	}
	switch m.PeerCertAsUsername {
	case "":
	case "cn", "san":
		if m.TLSListen == "" || c.MQTTTLS().CAPath == "" {
			ch.add("mqtt.peer-cert-as-username", "needs mqtt.tls-listen with a CA (mqtt.tls-ca-path, or tls-ca-path when no mqtt.tls-*-path is set): without one no client certificate is asked for")
		}
	default:
		ch.add("mqtt.peer-cert-as-username", "%q is not one of cn, san (or empty for off)", m.PeerCertAsUsername)
	}
}

// tlsFiles checks one endpoint's files: certificate and key required
// (why says what requires them), the CA optional.
func (ch *checker) tlsFiles(f tlsfile.Files, why string) {
	required := fmt.Sprintf("must be set when %s", why)
	ch.file(f.CertKey, f.CertPath, required)
	ch.file(f.KeyKey, f.KeyPath, required)
	ch.file(f.CAKey, f.CAPath, "")
}

// unusedTLSFiles reports each of f's files that is set, though why says
// nothing uses it.
func (ch *checker) unusedTLSFiles(f tlsfile.Files, why string) {
	for _, k := range [][2]string{{f.CertKey, f.CertPath}, {f.KeyKey, f.KeyPath}, {f.CAKey, f.CAPath}} {
		if k[1] != "" {
			ch.add(k[0], "%q is set but %s", k[1], why)
		}
	}
}
