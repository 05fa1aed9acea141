// Package tlsfile handles the PEM files of weir's TLS: it loads the ones
// settings name, for the client and the connectors alike (CAPool); loads a
// server's or node's certificate, key and CA into an Endpoint whose
// configurations follow Reload; names the identity a certificate carries
// (Identity); and makes a CA and the certificates it signs (CA, Issue),
// for `weir certs` and the tests.
package tlsfile

import (
	"crypto/x509"
	"fmt"
	"os"
)

// CAPool returns a pool of the certificates in the PEM file at path; a file
// with none is an error.
func CAPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("no PEM certificate in %s", path)
	}
	return pool, nil
}
