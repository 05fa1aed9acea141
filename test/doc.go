// Package test holds tests that run weir as real processes: crash safety
// with kill -9, clean restarts, clusters of several nodes with an etcd
// process, and the chaos test (chaos_test.go, docs/chaos.md): three nodes
// and an etcd with a toxiproxy proxy on every link, a nemesis that kills,
// pauses, partitions and slows them, and internal/chaos checking what was
// acknowledged against what was read back. They build cmd/weir once per
// run.
package test
