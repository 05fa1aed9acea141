package bridge

// Test seams for the external ingest tests (package bridge_test, which
// cannot be internal: it imports nodetest, which imports server, which
// imports bridge).

// SetBeforeBatch makes every batcher call f before it takes a batch, so a
// test can hold the store back. Call it before the first publish.
func SetBeforeBatch(i *Ingest, f func()) { i.beforeBatch = f }

// PendingBytes is what the pending budget holds now, and the most it ever
// held.
func PendingBytes(i *Ingest) (now, peak int64) { return i.budget.pending() }

// SetBeforeWait makes every batcher's waiter call f before it waits for a
// proposed batch's commit (a slow commit). Call it before the first
// publish.
func SetBeforeWait(i *Ingest, f func()) { i.beforeWait = f }

// Batchers is how many shard batchers run.
func Batchers(i *Ingest) int {
	i.mu.Lock()
	defer i.mu.Unlock()
	return len(i.batchers)
}
