package broker

import "errors"

var (
	// ErrClosed is returned by Start after Close.
	ErrClosed = errors.New("broker: closed")
	// ErrStarted is returned by a second Start.
	ErrStarted = errors.New("broker: already started")
	// ErrEmptyPassword is returned by HashPassword for "".
	ErrEmptyPassword = errors.New("broker: empty password")
)
