package cluster

import (
	"context"
	"time"
)

// enforceRetention enforces each stream's backlog duration (Node.Start runs
// it every Options.RetentionInterval): the entries of its shards appended
// before now − backlog are trimmed (raft log compaction: a range delete in
// the store).
func (n *Node) enforceRetention(now time.Time) {
	for _, m := range n.cat.streamList("") {
		if m.BacklogSeconds == 0 {
			continue
		}
		cutoff := now.Add(-time.Duration(m.BacklogSeconds) * time.Second)
		for _, id := range m.ShardIDs {
			// The leader trims, through raft, for every replica.
			s, ok := n.eng.shard(id)
			if !ok || s.leader.Load() != n.opts.Self.ID {
				continue
			}
			keep, err := s.IndexAtTime(cutoff)
			if err != nil {
				n.log.Warn("retention: finding the cutoff", "stream", m.Name, "shard", id, "err", err)
				continue
			}
			// Only records expire: raft's own entries below the first
			// record, and the trim entries of earlier rounds, are no
			// reason to trim (which would itself add an entry, and an
			// idle stream would trim every round).
			if first, ok, err := s.firstDataFrom(s.First(), keep); err != nil || !ok {
				continue
			} else if first.Index >= keep {
				continue
			}
			if err := s.Trim(context.Background(), keep-1); err != nil {
				n.log.Warn("retention: trimming", "stream", m.Name, "shard", id, "err", err)
				continue
			}
			n.log.Debug("retention: trimmed", "stream", m.Name, "shard", id, "through", keep-1)
		}
	}
}
