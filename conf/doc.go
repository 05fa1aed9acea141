// Package conf owns weir's one server config: the Config struct, its
// defaults, the YAML file format, the WEIR_* environment variables and
// command-line flags layered over it, and the validation that names every
// bad key at once.
//
// # Precedence
//
// Lowest to highest:
//
//	Default()  <  YAML file  <  WEIR_* environment  <  command-line flags
//
// Load starts from Default() and applies each layer onto it in that order,
// so a key a layer does not mention keeps the value below it, and a key it
// does mention overrides it, to zero or empty too. That is what lets a file
// say "mqtt.listen: """ (MQTT off), "stream.backlog-duration: 0" (keep
// forever) or "store.group-commit.max-wait: 0s" and be heard. A YAML null
// ("mqtt.listen:" with nothing after it) also means zero or empty.
// A zero that cannot be meant ("node-id: 0", "grpc.listen: """) is a
// validation error, not a cue to use the default.
//
// Config values built in Go are different: there zero means "unset", and
// WithDefaults fills every field whose zero value has no meaning of its
// own. Fields where zero means something (mqtt.listen, http.listen,
// stream.backlog-duration, store.group-commit.max-wait, enable-tls,
// etcd.endpoints, cluster.peer-addresses, the TLS paths) keep it; start
// from Default() to get their defaults. Either way the caller's value is never changed: Load builds its
// own, and WithDefaults and Validate work on a clone or only read.
//
// # Keys
//
// Every leaf of Config has one key, its YAML path ("store.group-commit.max-bytes").
// A table built once by reflection over the yaml tags derives the other
// two names from it, so file, environment, flags and docs cannot drift:
//
//	YAML   store.group-commit.max-bytes: 4MiB
//	env    WEIR_STORE_GROUP_COMMIT_MAX_BYTES=4MiB   ("WEIR_" + upper case, "." and "-" to "_")
//	flag   --store-group-commit-max-bytes=4MiB      ("." to "-")
//
// Each field's doc tag is its documentation and its flag's usage text, and
// ends with its default. Lists (etcd.endpoints, cluster.peer-addresses)
// are YAML sequences, and comma-separated in env and flags. Sizes (ByteSize) take bytes or
// "512KiB", "1MiB", "8MB"; durations take Go syntax ("10s", "168h");
// fractional numbers (cluster.weight, cluster.load-bound) take decimals
// ("1.25").
//
// Unknown YAML keys and WEIR_* variables that match no key are errors
// (WEIR_CONFIG excepted; the command owns it along with --config), so a
// typo cannot pass silently.
//
// # Errors
//
// Load and Validate return a Problems value listing every problem, each a
// *KeyError naming the key and, from Load, where the value came from:
//
//	conf: 2 problems:
//		grpc.listen (weir.yaml:4): "x:y" is not host:port (port must be a number from 0 to 65535)
//		store.max-record-size (env WEIR_STORE_MAX_RECORD_SIZE): invalid size "12XB": unknown unit "XB" (want B, KiB, …)
//
// errors.Is(err, ErrInvalid) holds for all of them.
package conf
