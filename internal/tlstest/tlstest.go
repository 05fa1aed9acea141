// Package tlstest runs TLS handshakes for tests.
package tlstest

import (
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Handshake runs a TLS handshake over 127.0.0.1 between serverConf and
// clientConf; the server then writes "ok" for the client to read, so a
// client certificate the server refuses fails the client too. It returns
// the server's connection state and both sides' errors.
func Handshake(t testing.TB, serverConf, clientConf *tls.Config) (tls.ConnectionState, error, error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	type result struct {
		state tls.ConnectionState
		err   error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		s := tls.Server(c, serverConf)
		defer s.Close()
		s.SetDeadline(time.Now().Add(10 * time.Second))
		if err = s.Handshake(); err == nil {
			_, err = s.Write([]byte("ok"))
		}
		done <- result{s.ConnectionState(), err}
	}()
	c, clientErr := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", ln.Addr().String(), clientConf)
	if clientErr == nil {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		var buf [2]byte
		_, clientErr = io.ReadFull(c, buf[:])
		c.Close()
	}
	r := <-done
	return r.state, r.err, clientErr
}
