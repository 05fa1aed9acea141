package api

import (
	"github.com/weir-log/weir/cluster"
)

// checkStreamName rejects a name CreateStream must not accept.
func checkStreamName(name string) error {
	if p := cluster.NameProblem(name); p != "" {
		return errorf(errInvalidStreamName, "invalid stream name %q: %s", name, p)
	}
	return nil
}

// checkReaderID rejects a shard reader id CreateShardReader must not accept.
func checkReaderID(id string) error {
	if p := cluster.NameProblem(id); p != "" {
		return errorf(errInvalidReaderName, "invalid shard reader id %q: %s", id, p)
	}
	return nil
}
