package tlsfile

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// CA is a certificate authority that signs the certificates of a weir
// deployment: its certificate and private key, parsed and as PEM.
type CA struct {
	Cert    *x509.Certificate
	Key     crypto.Signer
	CertPEM []byte // what NewCA encoded or LoadCA read
	KeyPEM  []byte // what NewCA encoded or LoadCA read
}

// NewCA makes a self-signed CA with a fresh ECDSA P-256 key, named
// commonName, valid from an hour ago (to allow for clock skew) until
// validFor from now. It signs leaf certificates only (path length 0).
func NewCA(commonName string, validFor time.Duration) (*CA, error) {
	if validFor <= 0 {
		return nil, fmt.Errorf("CA %q: validity %v is not positive", commonName, validFor)
	}
	return selfSign(caTemplate(commonName, validFor))
}

// caTemplate is the certificate NewCA signs: a CA that may sign
// certificates and CRLs, and no intermediate CAs.
func caTemplate(commonName string, validFor time.Duration) *x509.Certificate {
	now := time.Now()
	return &x509.Certificate{
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validFor),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
	}
}

// selfSign signs tmpl with a fresh key of its own.
func selfSign(tmpl *x509.Certificate) (*CA, error) {
	cert, key, certPEM, keyPEM, err := sign(tmpl, nil, nil)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

// sign gives tmpl a fresh ECDSA P-256 key and a random 128-bit serial
// number, and signs it with parentKey as parent, or with its own key as
// itself when parent is nil. The key is PEM-encoded as PKCS #8.
func sign(tmpl, parent *x509.Certificate, parentKey crypto.Signer) (cert *x509.Certificate, key *ecdsa.PrivateKey, certPEM, keyPEM []byte, err error) {
	key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("generating a key: %w", err)
	}
	if tmpl.SerialNumber, err = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128)); err != nil {
		return nil, nil, nil, nil, fmt.Errorf("generating a serial number: %w", err)
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("certificate %q: %w", tmpl.Subject.CommonName, err)
	}
	if cert, err = x509.ParseCertificate(der); err != nil {
		return nil, nil, nil, nil, fmt.Errorf("certificate %q: %w", tmpl.Subject.CommonName, err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("certificate %q: encoding the key: %w", tmpl.Subject.CommonName, err)
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
	return cert, key, certPEM, keyPEM, nil
}

// LoadCA reads a CA's PEM certificate and key, as NewCA and WritePair
// make them or as openssl does (a PKCS #8, SEC 1 or PKCS #1 key, not
// encrypted). The certificate file's first certificate must be a CA
// certificate and match the key; the errors name the file at fault.
func LoadCA(certPath, keyPath string) (*CA, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, err
	}
	cert, err := firstCertificate(certPEM)
	if err != nil {
		return nil, fmt.Errorf("CA certificate %s: %w", certPath, err)
	}
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return nil, fmt.Errorf("CA certificate %s: %q is not a CA certificate", certPath, cert.Subject.CommonName)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, err
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("CA key %s: %w", keyPath, err)
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("CA key %s does not match CA certificate %s", keyPath, certPath)
	}
	return &CA{Cert: cert, Key: key, CertPEM: certPEM, KeyPEM: keyPEM}, nil
}

// firstCertificate parses the first CERTIFICATE block of a PEM file.
func firstCertificate(data []byte) (*x509.Certificate, error) {
	for {
		var block *pem.Block
		if block, data = pem.Decode(data); block == nil {
			return nil, errors.New("no PEM certificate")
		}
		if block.Type == "CERTIFICATE" {
			return x509.ParseCertificate(block.Bytes)
		}
	}
}

// parseKey parses the first private key block of a PEM file, skipping
// the EC PARAMETERS block openssl ecparam writes before it.
func parseKey(data []byte) (crypto.Signer, error) {
	for {
		var block *pem.Block
		if block, data = pem.Decode(data); block == nil {
			return nil, errors.New("no PEM private key")
		}
		if block.Type == "ENCRYPTED PRIVATE KEY" || block.Headers["Proc-Type"] != "" {
			return nil, errors.New("the key is encrypted: decrypt it first (openssl pkey -in KEY -out PLAIN)")
		}
		var key any
		var err error
		switch block.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, err
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("a %T cannot sign", key)
		}
		return signer, nil
	}
}

// Leaf describes a certificate for Issue to sign.
type Leaf struct {
	// CommonName is the subject's name; with mqtt.peer-cert-as-username
	// "cn" it is the MQTT username, and it is the gRPC principal.
	CommonName string
	// Hosts are the names the certificate is valid for: IP addresses
	// become IP SANs, the others (DNS names, "*." wildcards allowed) DNS
	// SANs.
	Hosts []string
	// Emails become email SANs.
	Emails []string
	// Server allows the certificate for TLS servers (ExtKeyUsageServerAuth),
	// Client for TLS clients (ExtKeyUsageClientAuth); at least one must be
	// set, and a node's certificate, presented to other nodes, sets both.
	Server, Client bool
	// ValidFor is how long from now the certificate is valid; it ends no
	// later than the CA's. It starts an hour ago, for clock skew.
	ValidFor time.Duration
}

// Issue makes a fresh ECDSA P-256 key and a certificate for it that ca
// signs, as l describes, with a random 128-bit serial number. It returns
// both PEM-encoded, the key as PKCS #8. A malformed host or email, a leaf
// neither Server nor Client, or a ValidFor that is not positive is an
// error naming it.
func (ca *CA) Issue(l Leaf) (certPEM, keyPEM []byte, err error) {
	var errs []error
	if !l.Server && !l.Client {
		errs = append(errs, errors.New("neither server nor client: it could not be used"))
	}
	if l.ValidFor <= 0 {
		errs = append(errs, fmt.Errorf("validity %v is not positive", l.ValidFor))
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: l.CommonName},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(l.ValidFor),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	if tmpl.NotAfter.After(ca.Cert.NotAfter) {
		tmpl.NotAfter = ca.Cert.NotAfter
	}
	if tmpl.NotBefore.Before(ca.Cert.NotBefore) {
		tmpl.NotBefore = ca.Cert.NotBefore
	}
	if l.Server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if l.Client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	for _, h := range l.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if err := checkDNSName(h); err != nil {
			errs = append(errs, fmt.Errorf("host %q: %w", h, err))
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	for _, e := range l.Emails {
		if a, err := mail.ParseAddress(e); err != nil || a.Address != e {
			errs = append(errs, fmt.Errorf("email %q: not a plain address such as device1@example.com", e))
			continue
		}
		tmpl.EmailAddresses = append(tmpl.EmailAddresses, e)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, nil, fmt.Errorf("certificate %q: %w", l.CommonName, err)
	}
	_, _, certPEM, keyPEM, err = sign(tmpl, ca.Cert, ca.Key)
	return certPEM, keyPEM, err
}

// checkDNSName accepts a DNS name: dot-separated labels of letters,
// digits and inner hyphens, the first of which may be "*".
func checkDNSName(name string) error {
	const want = "not an IP address or a DNS name (letters, digits, '-' and '.', optionally starting \"*.\")"
	if name == "" || len(name) > 253 {
		return errors.New(want)
	}
	for i, label := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		if label == "*" && i == 0 {
			continue
		}
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return errors.New(want)
		}
		for _, c := range label {
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return errors.New(want)
			}
		}
	}
	return nil
}

// WritePair writes certPEM to dir/name.pem (mode 0644) and keyPEM to
// dir/name-key.pem (mode 0600), creating dir if needed and replacing
// existing files. Each file is written to a temporary file and renamed, so
// a failure leaves no half-written file behind.
func WritePair(dir, name string, certPEM, keyPEM []byte) (certPath, keyPath string, err error) {
	return writePair(dir, name+".pem", name+"-key.pem", certPEM, keyPEM)
}

// writePair is WritePair with the file names given.
func writePair(dir, certName, keyName string, certPEM, keyPEM []byte) (certPath, keyPath string, err error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	certPath, keyPath = filepath.Join(dir, certName), filepath.Join(dir, keyName)
	if err := writeFile(keyPath, keyPEM, 0o600); err != nil {
		return "", "", err
	}
	if err := writeFile(certPath, certPEM, 0o644); err != nil {
		return "", "", err
	}
	return certPath, keyPath, nil
}

// writeFile writes data to path with mode perm through a temporary file in
// the same directory and a rename.
func writeFile(path string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	err = f.Chmod(perm)
	if err == nil {
		_, err = f.Write(data)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
