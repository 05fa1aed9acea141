// Package broker will own weir's embedded MQTT broker (mochi-mqtt): its
// listeners (TCP, TLS, WebSocket) and the authentication and ACL hooks.
//
// It holds no code yet: the MQTT front door arrives in a later version, and
// until then `mqtt.listen` is accepted in the config but nothing listens.
package broker
