// Command weir is the one binary: `weir server` runs a node, the other
// commands administer streams and move records through the Go client.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "weir:", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "weir",
		Short:         "weir: a streaming log for device data with an MQTT front door",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(newServerCmd(), newMQTTCmd())
	root.AddCommand(newCertsCmd())
	addClientCommands(root)
	return root
}
