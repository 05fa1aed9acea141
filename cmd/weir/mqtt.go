package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/weir-log/weir/broker"
)

func newMQTTCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "mqtt",
		Short: "Tools for the MQTT front door",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "passwd USERNAME",
		Short: "Print an mqtt.auth-file user entry, with the bcrypt hash of a password read from stdin",
		Long: `Reads a password (the first line of standard input) and prints a user entry
for mqtt.auth-file with its bcrypt hash, e.g.

  echo 's3cret' | weir mqtt passwd device1 >> users.yaml   # under "users:"`,
		Args: exactlyOne("USERNAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
			password := strings.TrimRight(line, "\r\n")
			if password == "" {
				if err != nil && !errors.Is(err, io.EOF) {
					return fmt.Errorf("reading the password from stdin: %w", err)
				}
				return errors.New("no password on stdin (give it as the first line)")
			}
			hash, err := broker.HashPassword(password)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "  - username: %q\n    password: %q\n", args[0], hash)
			return nil
		},
	})
	return cmd
}
