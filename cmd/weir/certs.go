package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/weir-log/weir/internal/tlsfile"
)

// The CA that `weir certs` makes: its files' name (before .pem and
// -key.pem) and its Common Name, which the time it is made follows, so
// that two CAs tell apart.
const (
	caName       = "ca"
	caCommonName = "weir CA"
)

// maxDays bounds --days, so that a new CA's ten times as long stays a
// sensible (and representable) time.
const maxDays = 3650

// certsFlags are the flags of `weir certs`.
type certsFlags struct {
	dir     string
	hosts   []string
	server  string
	clients []string
	days    int
	force   bool
}

func newCertsCmd() *cobra.Command {
	f := &certsFlags{}
	cmd := &cobra.Command{
		Use:   "certs",
		Short: "Make a CA and the certificates for TLS between servers, nodes and clients",
		Long: `Writes PEM certificates and keys for weir's TLS settings into --dir:

  ca.pem, ca-key.pem             a CA (made on the first run, reused after)
  <server>.pem, <server>-key.pem the server's certificate, valid for --hosts, for
                                 the gRPC API, MQTT over TLS and node-to-node TLS
  <client>.pem, <client>-key.pem one client certificate per --client

and prints the configuration that uses them. Run it again to add certificates
under the same CA: existing certificates are kept unless --force is given, so
name only new ones (--server "" when the server's exists); the CA is always
reused when both its files exist.

  weir certs --hosts 127.0.0.1,::1,localhost,node1.example --client device1,device2
  weir certs --server "" --client device3
  weir certs --server node2 --hosts 10.0.0.2,node2.example --client ""`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.run(cmd.OutOrStdout())
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.dir, "dir", "certs", "directory to write the files into (made if missing)")
	fl.StringSliceVar(&f.hosts, "hosts", []string{"127.0.0.1", "::1", "localhost"}, "IP addresses and DNS names the server certificate is valid for (comma-separated)")
	fl.StringVar(&f.server, "server", "server", `name of the server certificate: its files and Common Name ("" for none)`)
	fl.StringSliceVar(&f.clients, "client", []string{"client"}, `names of client certificates, repeatable or comma-separated: their files and Common Names ("" for none)`)
	fl.IntVar(&f.days, "days", 365, "days the server and client certificates are valid; a CA made now gets ten times as long")
	fl.BoolVar(&f.force, "force", false, "overwrite existing server and client files, and replace a CA of which one file is missing")
	return cmd
}

// pairFiles are the paths of a certificate and its key.
type pairFiles struct{ cert, key string }

// files are the paths name's certificate and key get in --dir.
func (f *certsFlags) files(name string) pairFiles {
	return pairFiles{filepath.Join(f.dir, name+".pem"), filepath.Join(f.dir, name+"-key.pem")}
}

// issued is a leaf certificate made in memory, to be written.
type issued struct {
	name            string
	leaf            tlsfile.Leaf
	certPEM, keyPEM []byte
}

// run checks everything and makes every certificate in memory before it
// writes a file, so a failed run leaves --dir as it was.
func (f *certsFlags) run(out io.Writer) error {
	if err := f.check(); err != nil {
		return err
	}
	validFor := time.Duration(f.days) * 24 * time.Hour
	ca, made, err := f.loadOrMakeCA(10 * validFor)
	if err != nil {
		return err
	}

	var leaves []*issued
	if f.server != "" {
		leaves = append(leaves, &issued{name: f.server, leaf: tlsfile.Leaf{
			CommonName: f.server, Hosts: f.hosts, Server: true, Client: true, ValidFor: validFor,
		}})
	}
	for _, c := range f.clients {
		leaves = append(leaves, &issued{name: c, leaf: tlsfile.Leaf{CommonName: c, Client: true, ValidFor: validFor}})
	}
	for _, l := range leaves {
		if l.certPEM, l.keyPEM, err = ca.Issue(l.leaf); err != nil {
			if l.name == f.server {
				return fmt.Errorf("--hosts %q: %w", strings.Join(f.hosts, ","), err)
			}
			return err
		}
	}
	for _, l := range leaves {
		files := f.files(l.name)
		for _, path := range []string{files.cert, files.key} {
			if ok, err := exists(path); err != nil {
				return err
			} else if ok && !f.force {
				return fmt.Errorf("%s exists: remove it or give --force to overwrite it", path)
			}
		}
	}

	caFiles := f.files(caName)
	if made {
		if _, _, err := tlsfile.WritePair(f.dir, caName, ca.CertPEM, ca.KeyPEM); err != nil {
			return err
		}
		fmt.Fprintf(out, "wrote %s, %s: new CA %q, valid until %s\n", caFiles.cert, caFiles.key, ca.Cert.Subject.CommonName, ca.Cert.NotAfter.Format(time.DateOnly))
	} else {
		fmt.Fprintf(out, "using CA %s (%q, valid until %s)\n", caFiles.cert, ca.Cert.Subject.CommonName, ca.Cert.NotAfter.Format(time.DateOnly))
	}
	for _, l := range leaves {
		certPath, keyPath, err := tlsfile.WritePair(f.dir, l.name, l.certPEM, l.keyPEM)
		if err != nil {
			return err
		}
		if l.leaf.Server {
			fmt.Fprintf(out, "wrote %s, %s: server and client certificate %q for %s\n", certPath, keyPath, l.name, strings.Join(l.leaf.Hosts, ", "))
		} else {
			fmt.Fprintf(out, "wrote %s, %s: client certificate %q\n", certPath, keyPath, l.name)
		}
	}
	f.printUsage(out)
	return nil
}

// check validates the flags, naming the one at fault.
func (f *certsFlags) check() error {
	if f.dir == "" {
		return errors.New(`--dir "": want a directory`)
	}
	if f.days < 1 || f.days > maxDays {
		return fmt.Errorf("--days %d: want 1 to %d", f.days, maxDays)
	}
	if f.server != "" && len(f.hosts) == 0 {
		return fmt.Errorf("--hosts: want at least one IP address or DNS name for the server certificate %q", f.server)
	}
	seen := map[string]string{}
	names := []struct{ flag, name string }{}
	if f.server != "" {
		names = append(names, struct{ flag, name string }{"--server", f.server})
	}
	for _, c := range f.clients {
		names = append(names, struct{ flag, name string }{"--client", c})
	}
	for _, n := range names {
		if err := checkCertName(n.name); err != nil {
			return fmt.Errorf("%s %q: %w", n.flag, n.name, err)
		}
		if prev, ok := seen[n.name]; ok {
			return fmt.Errorf("%s %q: already given as %s: each certificate needs its own name", n.flag, n.name, prev)
		}
		seen[n.name] = n.flag
	}
	return nil
}

// checkCertName accepts a name for a certificate's files and Common Name:
// letters, digits, '.', '_', '@' and '-', not "ca", not ending "-key" (it
// could clash with another pair's key file) and not starting with '.'.
func checkCertName(name string) error {
	switch {
	case name == "":
		return errors.New("empty name (\"\" alone means none)")
	case name == caName:
		return errors.New(`"ca" names the CA's files`)
	case strings.HasSuffix(name, "-key"):
		return errors.New(`a name ending "-key" would clash with the key files`)
	case name[0] == '.' || name[0] == '-':
		return errors.New("a name starts with a letter, digit, '_' or '@'")
	}
	for _, c := range name {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.ContainsRune("._@-", c)) {
			return errors.New("want letters, digits, '.', '_', '@' and '-' (it names the files)")
		}
	}
	return nil
}

// loadOrMakeCA reuses --dir's CA when both its files exist and makes one
// valid for validFor when neither does (or, with --force, when one is
// missing); made reports a new CA, to be written.
func (f *certsFlags) loadOrMakeCA(validFor time.Duration) (ca *tlsfile.CA, made bool, err error) {
	files := f.files(caName)
	certExists, err := exists(files.cert)
	if err != nil {
		return nil, false, err
	}
	keyExists, err := exists(files.key)
	if err != nil {
		return nil, false, err
	}
	switch {
	case certExists && keyExists:
		ca, err := tlsfile.LoadCA(files.cert, files.key)
		return ca, false, err
	case certExists && !f.force:
		return nil, false, fmt.Errorf("%s exists but %s does not: restore the key, or give --force to make a new CA (which invalidates the certificates the old one signed)", files.cert, files.key)
	case keyExists && !f.force:
		return nil, false, fmt.Errorf("%s exists but %s does not: restore the certificate, or give --force to make a new CA", files.key, files.cert)
	}
	ca, err = tlsfile.NewCA(caCommonName+" "+time.Now().UTC().Format("2006-01-02 15:04:05"), validFor)
	return ca, true, err
}

// exists reports whether path names something (a file, or a link to one
// or to nothing), and any error but its absence.
func exists(path string) (bool, error) {
	_, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// printUsage prints the configuration and client flags that use the files.
func (f *certsFlags) printUsage(out io.Writer) {
	abs := func(path string) string {
		if a, err := filepath.Abs(path); err == nil {
			return a
		}
		return path
	}
	ca := f.files(caName)
	host := "127.0.0.1" // where the examples reach the server: the first of --hosts
	if f.server != "" && len(f.hosts) > 0 && !strings.HasPrefix(f.hosts[0], "*") {
		host = f.hosts[0]
	}
	if f.server != "" {
		s := f.files(f.server)
		fmt.Fprintf(out, `
# weir server configuration (the MQTT TLS listener inherits the tls-*-path keys;
# with tls-ca-path set, clients must present a certificate the CA signed, and
# any of them may use the whole gRPC API: give devices a CA of their own, in
# mqtt.tls-*-path, as docs/security.md shows):
enable-tls: true
tls-cert-path: %s
tls-key-path: %s
tls-ca-path: %s
mqtt:
  tls-listen: 127.0.0.1:8883   # or the address of one of --hosts
  # peer-cert-as-username: cn   # a client certificate's Common Name is its MQTT username
`, abs(s.cert), abs(s.key), abs(ca.cert))
	}
	for _, c := range f.clients {
		cf := f.files(c)
		fmt.Fprintf(out, `
# client %q:
weir stream list --addr hstreams://%s --tls-ca %s --tls-cert %s --tls-key %s
mosquitto_sub -h %s -p 8883 --cafile %s --cert %s --key %s -t '#'
`, c, net.JoinHostPort(host, "6570"), ca.cert, cf.cert, cf.key, host, ca.cert, cf.cert, cf.key)
	}
}
