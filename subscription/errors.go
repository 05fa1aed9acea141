package subscription

import "errors"

// Sentinel errors, wrapped with %w and the detail. The API layer maps them
// (and cluster's subscription errors) to gRPC and HStreamDB codes.
var (
	// ErrClosed: the manager is shutting down; consumers should reconnect.
	ErrClosed = errors.New("subscription: shutting down")
	// ErrConsumerExists: a consumer of that name is already attached.
	ErrConsumerExists = errors.New("subscription: consumer name already attached")
	// ErrActiveConsumers: a delete without force found attached consumers.
	ErrActiveConsumers = errors.New("subscription: subscription has active consumers")
	// ErrDeleted: the subscription was deleted while a consumer was attached.
	ErrDeleted = errors.New("subscription: subscription deleted")
	// ErrInvalidConsumer: a consumer registered without a usable name.
	ErrInvalidConsumer = errors.New("subscription: invalid consumer")
)
