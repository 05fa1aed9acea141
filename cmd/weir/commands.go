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
	addr string
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
		newAppendCmd(g),
		newReadCmd(g),
		newSubCmd(g),
		newConsumeCmd(g),
	} {
		cmd.PersistentFlags().StringVar(&g.addr, "addr", addrDefault, "server address host:port (env WEIR_ADDR)")
		root.AddCommand(cmd)
	}
}

// dial connects to --addr.
func (g *clientFlags) dial(ctx context.Context) (*client.Client, error) {
	c, err := client.Dial(ctx, g.addr)
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
