package bridge

// # Egress connectors
//
// An egress connector publishes the records of one stream to an external
// broker at QoS 1. It reads the stream as a consumer (named after its
// client ID) of a subscription, created when missing, and acknowledges
// each record to the subscription only once the broker's PUBACK for it has
// come: what the broker has not acknowledged is delivered again, by the
// connector itself or, after a restart, by the subscription's owner.
//
//	run: subscription exists? ─no─► create (offset, ack-timeout, max-inflight)
//	  └─► Manager.Attach(client ID) ──fail──► log, back off, again
//	serve: remote.run (connect, reconnect with back-off) beside the loop:
//	  connected? ─► Consumer.Next ─► DecodeBatch ─► per record: topic
//	  template, payload ─► PUBLISH QoS 1, up to max-inflight awaiting their
//	  PUBACK ─► PUBACKs waited for in order ─► Consumer.Ack, once per batch
//	  publish failed, connection lost, or no PUBACK within ack-timeout:
//	  ack what was PUBACKed ─► wait until connected ─► publish again from the
//	  first record without a PUBACK, in order
//	ctx ends: remote disconnected, consumer closed (what it held unacked
//	  is delivered again next time)
//
// # Decisions
//
//   - Clean session. With CleanSession and its own reconnecting off, paho
//     completes every PUBLISH token still waiting for a PUBACK with an
//     error when the connection is lost (messageIds.cleanUp, paho
//     client.go:574) and empties its store on the next connect
//     (persist.Reset, client.go:293): paho never resends, the connector
//     does, from the log, knowing which records are done. A persistent
//     session would make paho resend its store on reconnect (resume) while
//     the connector resends the same records, adding duplicates, and keeps
//     nothing at the broker a publisher needs.
//   - The connection is made only while the consumer is attached. In a
//     cluster every node runs the same connectors, but only the node that
//     owns the subscription can attach (the others get cluster.ErrNotOwner
//     and wait, logging at info): were they all connected, their equal
//     client IDs would take each other's session over at the broker, over
//     and over.
//   - Per-key order. A shard's records come to one consumer in log order,
//     a batch at a time; the connector publishes them in order on one
//     connection, which the broker keeps, and after a failure publishes
//     again from the first record without a PUBACK. So the first
//     appearance of each record on the broker follows the log, and a key's
//     records (one shard) keep their order. Records may appear twice (a
//     PUBACK lost with the connection): at least once. Each PUBLISH sent
//     again is counted "retried"; "published" counts PUBACKs.
//   - A batch delivered again by the owner (its ack timeout passed while
//     the connector held it, waiting for a broker that was down) may hold
//     records the connector has since acknowledged: those at or before the
//     last record of their shard it acknowledged are acked again, not
//     published again.
//   - Payload: a RAW record's payload as stored. A JSON record (HStreamDB's
//     HRecord: a serialized google.protobuf.Struct) is published as JSON
//     text, the Struct as a JSON object (encoding/json: compact, keys
//     sorted); one whose payload is not such a Struct is published as
//     stored. Attributes (mqtt.* properties included) are not sent: the
//     connector speaks MQTT 3.1.1. Retain is the connector's setting.
//   - Topic: the template over ${stream}, ${key} and ${topic} (the
//     record's mqtt.topic attribute, or the stream's name for a record
//     appended without one). A record whose topic renders to something
//     that cannot be published to (empty, with + or #, U+0000, over 65535
//     bytes) is acked without being published, logged, and counted
//     "skipped"; so is a batch that does not decode.
//   - Bounds: at most max-inflight PUBLISHes await their PUBACK (paho has
//     no window of its own for 3.1.1), one batch is handled at a time, and
//     the subscription holds at most its max-unacked records delivered and
//     unacknowledged (max-inflight, when the connector creates it). A
//     batch larger than the window goes through it in turns.
//   - Setup failures are logged and retried with the connection's
//     back-off (reconnect-min doubling to reconnect-max): a stream that
//     does not exist yet, a subscription of that id on another stream, a
//     consumer of the client ID's name already attached, etcd.
//
// # Caveats
//
//   - A record the broker refuses by closing the connection (a PUBLISH
//     larger than its maximum packet size, 1 MB by default on EMQX; a topic
//     its ACL answers with a disconnect) is published again after every
//     reconnect, and holds the whole connector back (it handles one batch
//     at a time, whatever its shard): the connector cannot tell that
//     from an outage.
//   - Once the subscription exists, its settings are its own: changing
//     offset, ack-timeout or max-inflight in the config does not change
//     it (delete the subscription to have it created again).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	paho "github.com/eclipse/paho.mqtt.golang"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/api/wire"
	"github.com/weir-log/weir/cluster"
	"github.com/weir-log/weir/conf"
	"github.com/weir-log/weir/subscription"
)

const (
	// egressSetupTimeout bounds one attempt at finding or creating the
	// subscription and attaching to it.
	egressSetupTimeout = 10 * time.Second
	// egressPollMin and egressPollMax bound how often a connector whose
	// publishes failed looks whether its connection is back: remote.run
	// may not have noticed the loss yet when the tokens fail.
	egressPollMin = 20 * time.Millisecond
	egressPollMax = 500 * time.Millisecond
	// maxTopicLen is the longest topic MQTT can carry.
	maxTopicLen = 65535
)

var (
	// errNoPuback: a PUBLISH went unacknowledged for the ack timeout.
	errNoPuback = errors.New("bridge: no PUBACK within the ack timeout")
	// errEgressOtherStream: the connector's subscription reads another
	// stream than the connector's.
	errEgressOtherStream = errors.New("bridge: the egress connector's subscription reads another stream")
)

// egressConnector publishes a stream's records to an external broker.
type egressConnector struct {
	cs     *Connectors
	cfg    conf.EgressConnector
	topic  egressTemplate
	remote *remote
	log    *slog.Logger
}

// newEgressConnector compiles an egress connector: its stream name,
// subscription id, topic template and remote (TLS files). key names it in
// errors: connectors.egress[0] (to-emqx).
func newEgressConnector(cs *Connectors, key string, cfg conf.EgressConnector) (*egressConnector, error) {
	if p := cluster.NameProblem(cfg.Stream); p != "" {
		return nil, fmt.Errorf("%s.stream: %q is not a valid stream name: %s", key, cfg.Stream, p)
	}
	if p := cluster.NameProblem(cfg.Subscription); p != "" {
		return nil, fmt.Errorf("%s.subscription: %q is not a valid subscription id: %s", key, cfg.Subscription, p)
	}
	if cfg.Offset != cluster.OffsetEarliest && cfg.Offset != cluster.OffsetLatest {
		return nil, fmt.Errorf("%s.offset: %q is not one of earliest, latest", key, cfg.Offset)
	}
	if cfg.MaxInflight < 1 || cfg.MaxInflight > 65535 {
		return nil, fmt.Errorf("%s.max-inflight: must be from 1 to 65535, not %d", key, cfg.MaxInflight)
	}
	if cfg.AckTimeout < time.Second {
		return nil, fmt.Errorf("%s.ack-timeout: must be at least 1s, not %s", key, cfg.AckTimeout)
	}
	topic, err := parseEgressTemplate(cfg.Topic)
	if err != nil {
		return nil, fmt.Errorf("%s.topic: %q: %w", key, cfg.Topic, err)
	}
	r, err := newRemote(cs, key, cfg.Name, "egress", cfg.Remote, true, nil)
	if err != nil {
		return nil, err
	}
	return &egressConnector{
		cs: cs, cfg: cfg, topic: topic, remote: r,
		log: r.log.With("stream", cfg.Stream, "subscription", cfg.Subscription),
	}, nil
}

// run attaches to the subscription and publishes what it delivers until
// ctx ends, attaching again (with back-off) whenever that fails or the
// consumer is dropped.
func (e *egressConnector) run(ctx context.Context) {
	backoff := e.cfg.ReconnectMin
	for attempt := 1; ctx.Err() == nil; attempt++ {
		c, err := e.attach(ctx)
		if err == nil {
			e.log.Info("egress connector attached to its subscription", "consumer", e.cfg.ClientID)
			attempt, backoff = 0, e.cfg.ReconnectMin
			err = e.serve(ctx, c)
			c.Close()
			if ctx.Err() != nil {
				return
			}
			e.log.Warn("egress connector's consumer stopped; attaching again", "retry_in", backoff.Round(time.Millisecond), "error", err)
		} else if ctx.Err() != nil {
			return
		} else {
			e.logAttachFailure(attempt, backoff, err)
		}
		if !sleepCtx(ctx, jitter(backoff)) {
			return
		}
		backoff = min(2*backoff, e.cfg.ReconnectMax)
	}
}

// logAttachFailure says why the connector could not attach.
func (e *egressConnector) logAttachFailure(attempt int, backoff time.Duration, err error) {
	lvl, msg := e.log.Warn, "egress connector cannot attach to its subscription; retrying"
	switch {
	case errors.Is(err, cluster.ErrStreamNotFound):
		msg = "egress connector's stream does not exist (yet); retrying"
	case errors.Is(err, errEgressOtherStream):
		msg = "egress connector's subscription reads another stream (give the connector another subscription id); retrying"
	case errors.Is(err, subscription.ErrConsumerExists):
		msg = "a consumer named after the egress connector's client ID is already attached to its subscription (another connector, or a gRPC consumer?); retrying"
	case errors.Is(err, cluster.ErrNotOwner):
		lvl, msg = e.log.Info, "another node owns the egress connector's subscription and publishes it; this node waits"
	}
	lvl(msg, "attempt", attempt, "retry_in", backoff.Round(time.Millisecond), "error", err)
}

// attach finds the subscription, creating it when missing, checks that it
// reads the connector's stream, and attaches a consumer named after the
// client ID, retrying briefly while one of that name is still attached.
func (e *egressConnector) attach(ctx context.Context) (*subscription.Consumer, error) {
	ctx, cancel := context.WithTimeout(ctx, egressSetupTimeout)
	defer cancel()
	node := e.cs.opts.Node
	meta, err := node.Subscription(e.cfg.Subscription)
	if errors.Is(err, cluster.ErrSubscriptionNotFound) {
		meta, err = node.CreateSubscription(ctx, cluster.SubscriptionMeta{
			ID:                e.cfg.Subscription,
			Stream:            e.cfg.Stream,
			AckTimeoutSeconds: int32(e.cfg.AckTimeout / time.Second),
			MaxUnackedRecords: int32(e.cfg.MaxInflight),
			Offset:            e.cfg.Offset,
		})
		switch {
		case errors.Is(err, cluster.ErrSubscriptionExists): // created meanwhile
			meta, err = node.Subscription(e.cfg.Subscription)
		case err == nil:
			e.log.Info("egress connector created its subscription", "offset", e.cfg.Offset)
		}
	}
	if err != nil {
		return nil, err
	}
	if meta.Stream != e.cfg.Stream {
		return nil, fmt.Errorf("%w: subscription %q reads stream %q, not %q", errEgressOtherStream, meta.ID, meta.Stream, e.cfg.Stream)
	}
	info := subscription.ConsumerInfo{Name: e.cfg.ClientID, URI: e.cfg.URL, UserAgent: "weir-egress-connector"}
	deadline := time.Now().Add(attachRetry)
	for {
		c, err := e.cs.opts.Subscriptions.Attach(ctx, e.cfg.Subscription, info)
		if !errors.Is(err, subscription.ErrConsumerExists) || time.Now().After(deadline) {
			return c, err
		}
		if !sleepCtx(ctx, 50*time.Millisecond) {
			return nil, err
		}
	}
}

// serve keeps the connection up and publishes the consumer's batches,
// until ctx ends or the consumer fails (its subscription deleted, say).
// It takes a batch only while connected, so that a broker that is down
// does not run batches into their ack timeout.
func (e *egressConnector) serve(ctx context.Context, c *subscription.Consumer) error {
	rctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { e.remote.run(rctx, nil) })
	defer func() {
		stop()
		wg.Wait()
	}()
	p := &egressPublisher{e: e, c: c, marks: make(map[uint64]egressPos)}
	for {
		if !e.remote.waitUp(ctx) {
			return ctx.Err()
		}
		rr, err := c.Next(ctx)
		if err != nil {
			return err
		}
		if err := p.batch(ctx, rr); err != nil {
			return err
		}
	}
}

// count adds n to the connector's messages of one result.
func (e *egressConnector) count(result string, n int) {
	if n > 0 {
		e.cs.metrics.count(e.cfg.Name, "egress", result, n)
	}
}

// egressPublisher publishes one consumer's batches, one at a time. It is
// used by serve's goroutine only.
type egressPublisher struct {
	e *egressConnector
	c *subscription.Consumer
	// marks holds, by shard, the last record this consumer acked such
	// that every record of the shard it was given before was acked too
	// (each PUBACKed or skipped). A shard's records come in log order, so
	// a record at or before its shard's mark was published already.
	marks map[uint64]egressPos
}

// egressPos is a record's position in its shard.
type egressPos struct {
	batch uint64 // the log index of its batch
	index uint32 // its position in the batch
}

func egressPosOf(id *hstreampb.RecordId) egressPos {
	return egressPos{batch: id.GetBatchId(), index: id.GetBatchIndex()}
}

func (a egressPos) after(b egressPos) bool {
	return a.batch > b.batch || a.batch == b.batch && a.index > b.index
}

// egressItem is one record of the batch being published.
type egressItem struct {
	id      *hstreampb.RecordId
	topic   string
	payload []byte
	tries   int  // PUBLISHes sent
	done    bool // PUBACKed, skipped, or published before (see marks)
	acked   bool // Consumer.Ack'ed
}

// batch publishes the records of one batch and acks each once done. It
// returns only when every record is done, or with ctx's error.
func (p *egressPublisher) batch(ctx context.Context, rr *hstreampb.ReceivedRecord) error {
	e := p.e
	ids := rr.GetRecordIds()
	recs, err := wire.DecodeBatch(rr.GetRecord(), 0)
	if err == nil && len(recs) != len(ids) {
		err = fmt.Errorf("%d records for %d record ids", len(recs), len(ids))
	}
	if err != nil {
		// It would come back forever: skip it, as the owner skips a
		// corrupt entry.
		e.log.Warn("egress connector: skipping a batch that does not decode", "records", len(ids), "error", err)
		p.c.Ack(ids)
		e.count("skipped", len(ids))
		return nil
	}
	items := make([]egressItem, len(recs))
	skipped := 0
	for i, rec := range recs {
		it := &items[i]
		it.id = ids[i]
		if m, ok := p.marks[it.id.GetShardId()]; ok && !egressPosOf(it.id).after(m) {
			it.done = true // delivered again after its PUBACK: ack it again
			continue
		}
		key := rec.GetHeader().GetKey()
		it.topic = e.topic.render(e.cfg.Stream, key, recordTopic(rec, e.cfg.Stream))
		if problem := topicProblem(it.topic); problem != "" {
			e.log.Warn("egress connector: a record's topic cannot be published to; the record is acked and skipped",
				"record", wire.FormatRecordID(it.id), "key", key, "topic", it.topic, "problem", problem)
			it.done = true
			skipped++
			continue
		}
		it.payload = egressPayload(rec)
	}
	e.count("skipped", skipped)
	for {
		err := p.publish(ctx, items)
		p.ack(items)
		if err == nil || ctx.Err() != nil {
			return ctx.Err()
		}
		first, pending := -1, 0
		for i := range items {
			if !items[i].done {
				if first < 0 {
					first = i
				}
				pending++
			}
		}
		e.log.Warn("egress connector: publishing failed; publishing again from the first record without a PUBACK once connected",
			"record", wire.FormatRecordID(items[first].id), "pending", pending, "error", err)
		if !p.waitConnected(ctx) {
			return ctx.Err()
		}
	}
}

// publish sends a PUBLISH for every record not done, in order, with at
// most max-inflight awaiting their PUBACK, and waits for the PUBACKs in
// order, marking the records done. After a failure it sends no more and
// returns the first error once what it sent has settled (ctx's error at
// once).
func (p *egressPublisher) publish(ctx context.Context, items []egressItem) error {
	e := p.e
	type flight struct {
		i        int
		tok      paho.Token
		deadline time.Time
	}
	var (
		window             []flight
		failed             error
		halted             bool // a PUBLISH failed as it was sent: send no more
		next               int
		published, retried int
	)
	defer func() {
		e.count("published", published)
		e.count("retried", retried)
	}()
	for {
		for !halted && failed == nil && len(window) < e.cfg.MaxInflight {
			for next < len(items) && items[next].done {
				next++
			}
			if next == len(items) {
				break
			}
			it := &items[next]
			if it.tries > 0 {
				retried++
			}
			it.tries++
			tok := e.remote.client.Publish(it.topic, 1, e.cfg.Retain, it.payload)
			window = append(window, flight{i: next, tok: tok, deadline: time.Now().Add(e.cfg.AckTimeout)})
			next++
			select {
			case <-tok.Done(): // not connected, no packet ID free, write timeout
				halted = tok.Error() != nil
			default:
			}
		}
		if len(window) == 0 {
			return failed
		}
		f := window[0]
		window = window[1:]
		switch err := waitPuback(ctx, f.tok, f.deadline); {
		case err == nil:
			items[f.i].done = true
			published++
		case ctx.Err() != nil:
			return ctx.Err()
		case failed == nil:
			failed = err
		}
	}
}

// waitPuback waits for a PUBLISH's PUBACK until deadline.
func waitPuback(ctx context.Context, tok paho.Token, deadline time.Time) error {
	select {
	case <-tok.Done():
		return tok.Error()
	default:
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return errNoPuback
	}
}

// ack acks the records done and not acked yet, and moves the marks over
// the batch's done prefix.
func (p *egressPublisher) ack(items []egressItem) {
	var ids []*hstreampb.RecordId
	prefix := true
	for i := range items {
		it := &items[i]
		if !it.done {
			prefix = false
			continue
		}
		if prefix {
			shard, pos := it.id.GetShardId(), egressPosOf(it.id)
			if m, ok := p.marks[shard]; !ok || pos.after(m) {
				p.marks[shard] = pos
			}
		}
		if !it.acked {
			it.acked = true
			ids = append(ids, it.id)
		}
	}
	p.c.Ack(ids)
}

// waitConnected waits until the connection is up, after a failure: it
// polls a little first, since the failure may come before remote.run has
// noticed the loss. It returns false when ctx ends.
func (p *egressPublisher) waitConnected(ctx context.Context) bool {
	for pause := egressPollMin; ; pause = min(2*pause, egressPollMax) {
		if !sleepCtx(ctx, pause) || !p.e.remote.waitUp(ctx) {
			return false
		}
		if p.e.remote.client.IsConnectionOpen() {
			return true
		}
	}
}

// recordTopic is a record's MQTT topic: its mqtt.topic attribute, or the
// stream's name for a record appended without one.
func recordTopic(rec *hstreampb.HStreamRecord, stream string) string {
	if t := rec.GetHeader().GetAttributes()[AttrTopic]; t != "" {
		return t
	}
	return stream
}

// egressPayload is what a record is published with: a RAW record's
// payload; a JSON record's Struct as JSON text, or its payload as stored
// when that is not a Struct (or holds a number JSON cannot say).
func egressPayload(rec *hstreampb.HStreamRecord) []byte {
	payload := rec.GetPayload()
	if rec.GetHeader().GetFlag() != hstreampb.HStreamRecordHeader_JSON {
		return payload
	}
	var s structpb.Struct
	if err := proto.Unmarshal(payload, &s); err != nil || len(s.ProtoReflect().GetUnknown()) > 0 {
		return payload
	}
	b, err := json.Marshal(s.AsMap())
	if err != nil {
		return payload
	}
	return b
}

// topicProblem says why a rendered topic cannot be published to, or
// returns "".
func topicProblem(topic string) string {
	switch {
	case topic == "":
		return "it is empty"
	case len(topic) > maxTopicLen:
		return fmt.Sprintf("it is %d bytes long, over MQTT's %d", len(topic), maxTopicLen)
	case strings.ContainsAny(topic, "+#"):
		return "it has a wildcard (+ or #)"
	case strings.ContainsRune(topic, 0):
		return "it has a U+0000 character"
	case !utf8.ValidString(topic):
		return "it is not UTF-8"
	}
	return ""
}

// An egressTemplate is an egress connector's topic template: text with
// ${stream}, ${key} and ${topic} in it. (Route templates, parseTemplate,
// have other variables.)
type egressTemplate template

// parseEgressTemplate compiles a topic template. Literal text with a
// wildcard, or a template with no variables that is not a valid topic,
// could never be published to: both are errors.
func parseEgressTemplate(s string) (egressTemplate, error) {
	t, err := splitTemplate(s, func(name string) (part, error) {
		switch name {
		case "stream", "key", "topic":
			return part{v: name}, nil
		}
		return part{}, fmt.Errorf("unknown variable ${%s} (want ${stream}, ${key} or ${topic})", name)
	})
	if err != nil {
		return nil, err
	}
	for _, p := range t {
		if p.v == "" && strings.ContainsAny(p.text, "+#") {
			return nil, errors.New("has a wildcard (+ or #): a topic to publish to has none")
		}
	}
	if t.static() {
		if problem := topicProblem(s); problem != "" {
			return nil, fmt.Errorf("is not a topic to publish to: %s", problem)
		}
	}
	return egressTemplate(t), nil
}

// render fills the template in for a record.
func (t egressTemplate) render(stream, key, topic string) string {
	return template(t).render(vars{stream: stream, key: key, topic: topic})
}
