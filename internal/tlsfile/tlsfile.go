// Package tlsfile loads the PEM files TLS settings name, for the client and
// the connectors alike.
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
