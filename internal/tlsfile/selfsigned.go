package tlsfile

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"time"
)

// SelfSigned writes cert.pem and key.pem into dir: a self-signed ECDSA
// certificate for 127.0.0.1, valid for an hour either side of now, usable
// as server, client and CA certificate. pair holds both, with Leaf set.
// It is for tests.
func SelfSigned(dir string) (certPath, keyPath string, pair tls.Certificate, err error) {
	tmpl := caTemplate("weir test", time.Hour)
	tmpl.KeyUsage |= x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	ca, err := selfSign(tmpl)
	if err != nil {
		return "", "", pair, err
	}
	if pair, err = tls.X509KeyPair(ca.CertPEM, ca.KeyPEM); err != nil {
		return "", "", pair, err
	}
	pair.Leaf = ca.Cert
	if certPath, keyPath, err = writePair(dir, "cert.pem", "key.pem", ca.CertPEM, ca.KeyPEM); err != nil {
		return "", "", pair, err
	}
	return certPath, keyPath, pair, nil
}
