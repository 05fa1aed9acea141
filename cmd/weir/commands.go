package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/weir-log/weir/client"
)

// defaultAddr is where the client commands find a server when neither
// --addr nor WEIR_ADDR says otherwise: a local `weir server`.
const defaultAddr = "127.0.0.1:6570"

// clientFlags are the flags every client command shares.
type clientFlags struct {
	addr                   string
	tlsCA, tlsCert, tlsKey string
	token                  string
}

// addClientCommands adds the commands that talk to a server through the Go
// client. Each gets a persistent --addr (not the root, so `weir server`
// keeps its own flag namespace).
func addClientCommands(root *cobra.Command) {
	g := &clientFlags{}
	addrDefault := defaultAddr
	if env := os.Getenv("WEIR_ADDR"); env != "" {
		addrDefault = env
	}
	for _, cmd := range []*cobra.Command{
		newStreamCmd(g),
		newShardCmd(g),
		newClusterCmd(g),
		newAppendCmd(g),
		newReadCmd(g),
		newSubCmd(g),
		newConsumeCmd(g),
		newBenchCmd(g),
	} {
		f := cmd.PersistentFlags()
		f.StringVar(&g.addr, "addr", addrDefault, "server host:port, or a url of several: hstream://h1:6570,h2:6570 (hstreams:// for TLS) (env WEIR_ADDR)")
		f.StringVar(&g.tlsCA, "tls-ca", "", "PEM file of the CA that signed the servers' certificates (turns TLS on)")
		f.StringVar(&g.tlsCert, "tls-cert", "", "PEM file of a client certificate, for servers that ask for one (with --tls-key)")
		f.StringVar(&g.tlsKey, "tls-key", "", "PEM file of the client certificate's key")
		f.StringVar(&g.token, "token", "", "auth token sent as \"authorization: Basic <token>\"")
		root.AddCommand(cmd)
	}
}

// dial connects to --addr.
func (g *clientFlags) dial(ctx context.Context) (*client.Client, error) {
	if (g.tlsCert == "") != (g.tlsKey == "") {
		return nil, fmt.Errorf("--tls-cert %q and --tls-key %q: give both or neither", g.tlsCert, g.tlsKey)
	}
	for _, f := range []struct{ flag, path string }{{"--tls-ca", g.tlsCA}, {"--tls-cert", g.tlsCert}, {"--tls-key", g.tlsKey}} {
		if f.path == "" {
			continue
		}
		if _, err := os.Stat(f.path); err != nil {
			return nil, fmt.Errorf("%s: %w", f.flag, err)
		}
	}
	var opts []client.Option
	if g.tlsCA != "" {
		opts = append(opts, client.WithCACert(g.tlsCA))
	}
	if g.tlsCert != "" || g.tlsKey != "" {
		opts = append(opts, client.WithClientCert(g.tlsCert, g.tlsKey))
	}
	if g.token != "" {
		opts = append(opts, client.WithAuthToken(g.token))
	}
	c, err := client.Dial(ctx, g.addr, opts...)
	if errors.Is(err, client.ErrInvalidArgument) {
		return nil, fmt.Errorf("--addr %q: %w", g.addr, err)
	}
	return c, err
}

// run dials --addr, runs fn and closes the connection.
func (g *clientFlags) run(ctx context.Context, fn func(ctx context.Context, c *client.Client) error) error {
	c, err := g.dial(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	return fn(ctx, c)
}

// exactlyOne accepts one positional argument, named in the error.
func exactlyOne(name string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != 1 {
			path := strings.TrimPrefix(cmd.CommandPath(), cmd.Root().Name()+" ")
			return fmt.Errorf("%s: want exactly one %s argument, got %d", path, name, len(args))
		}
		return nil
	}
}
