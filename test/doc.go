// Package test holds tests that run weir as real processes: crash safety
// with kill -9, and clean restarts. They build cmd/weir once per run.
package test
