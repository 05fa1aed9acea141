package conf

import (
	"errors"
	"strconv"
	"strings"
)

// ErrInvalid matches, with errors.Is, every error Load and Validate return
// for a bad config (but not one for a config file that cannot be read).
var ErrInvalid = errors.New("conf: invalid config")

// A KeyError is one problem with one key.
type KeyError struct {
	// Key is the YAML key path ("grpc.listen"); empty for an environment
	// variable or file-level problem that belongs to no key.
	Key string
	// Source says where the value came from, when Load knows: "weir.yaml:4",
	// "env WEIR_GRPC_LISTEN" or "flag --grpc-listen".
	Source string
	Err    error
}

func (e *KeyError) Error() string {
	var b strings.Builder
	switch {
	case e.Key != "" && e.Source != "":
		b.WriteString(e.Key + " (" + e.Source + ")")
	case e.Key != "":
		b.WriteString(e.Key)
	default:
		b.WriteString(e.Source)
	}
	b.WriteString(": ")
	b.WriteString(e.Err.Error())
	return b.String()
}

func (e *KeyError) Unwrap() error { return e.Err }

// Problems is every problem found in one config, each naming its key.
type Problems []*KeyError

func (p Problems) Error() string {
	if len(p) == 1 {
		return "conf: " + p[0].Error()
	}
	var b strings.Builder
	b.WriteString("conf: " + strconv.Itoa(len(p)) + " problems:")
	for _, e := range p {
		b.WriteString("\n\t" + e.Error())
	}
	return b.String()
}

// Unwrap lets errors.As find each *KeyError.
func (p Problems) Unwrap() []error {
	errs := make([]error, len(p))
	for i, e := range p {
		errs[i] = e
	}
	return errs
}

// Is makes errors.Is(p, ErrInvalid) true.
func (p Problems) Is(target error) bool { return target == ErrInvalid }

// err returns p as an error, or nil when there are no problems.
func (p Problems) err() error {
	if len(p) == 0 {
		return nil
	}
	return p
}
