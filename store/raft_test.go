package store

import (
	"fmt"
	"io"
	"log"
	"math"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// raftShard drives one RawNode over a Log with the Ready loop of doc.go,
// reduced to one shard and one voter (no messages to send).
type raftShard struct {
	t       *testing.T
	db      *DB
	id      uint64
	rn      *raft.RawNode
	applied []string
	cs      *pb.ConfState // applied, to persist with the next round
}

func newRaftShard(t *testing.T, db *DB, id uint64) *raftShard {
	l := mustLog(t, db, id)
	hs, _, err := l.InitialState()
	require.NoError(t, err)
	rn, err := raft.NewRawNode(&raft.Config{
		ID:              1,
		ElectionTick:    10,
		HeartbeatTick:   1,
		Storage:         l,
		Applied:         hs.GetCommit(), // everything committed was applied before
		MaxSizePerMsg:   1 << 20,
		MaxInflightMsgs: 256,
		Logger:          &raft.DefaultLogger{Logger: log.New(io.Discard, "", 0)},
	})
	require.NoError(t, err)
	return &raftShard{t: t, db: db, id: id, rn: rn}
}

// round runs one turn of the Ready loop, if raft has anything ready.
func (s *raftShard) round() {
	t := s.t
	if !s.rn.HasReady() {
		return
	}
	rd := s.rn.Ready()
	b := s.db.NewBatch()
	if !raft.IsEmptySnap(rd.Snapshot) {
		require.NoError(t, b.ApplySnapshot(s.id, rd.Snapshot))
	}
	require.NoError(t, b.Append(s.id, rd.Entries))
	if !raft.IsEmptyHardState(rd.HardState) {
		b.SetHardState(s.id, rd.HardState)
	}
	if s.cs != nil {
		b.SetConfState(s.id, s.cs)
		s.cs = nil
	}
	require.NoError(t, b.Commit(rd.MustSync))
	// One voter: nothing to send.
	for _, e := range rd.CommittedEntries {
		switch e.GetType() {
		case pb.EntryConfChange:
			var cc pb.ConfChange
			require.NoError(t, proto.Unmarshal(e.GetData(), &cc))
			s.cs = s.rn.ApplyConfChange(&cc)
		case pb.EntryNormal:
			if len(e.GetData()) > 0 {
				s.applied = append(s.applied, string(e.GetData()))
			}
		}
	}
	s.rn.Advance(rd)
}

// run loops until cond holds.
func (s *raftShard) run(cond func() bool) {
	for range 10000 {
		if cond() {
			return
		}
		if !s.rn.HasReady() {
			s.rn.Tick()
		}
		s.round()
	}
	s.t.Fatal("raft made no progress")
}

func (s *raftShard) leader() bool { return s.rn.BasicStatus().RaftState == raft.StateLeader }

func TestRaftRoundTrip(t *testing.T) {
	dir := t.TempDir()
	db := openDB(t, dir, Options{})
	s := newRaftShard(t, db, 5)
	require.NoError(t, s.rn.Bootstrap([]raft.Peer{{ID: 1}}))
	s.run(func() bool { return !s.rn.HasReady() }) // persist and apply the bootstrap conf change
	require.NoError(t, s.rn.Campaign())
	s.run(s.leader)

	var want []string
	for i := range 100 {
		want = append(want, fmt.Sprintf("record-%03d", i))
		require.NoError(t, s.rn.Propose([]byte(want[i])))
	}
	s.run(func() bool { return len(s.applied) == len(want) })
	assert.Equal(t, want, s.applied)
	s.run(func() bool { return !s.rn.HasReady() }) // persist the last conf state / commit
	require.NoError(t, db.Close())

	// Reopen: the committed entries, the hard state and the conf state are
	// on disk, and raft restarts from them.
	db = openDB(t, dir, Options{})
	l := mustLog(t, db, 5)
	hs, cs, err := l.InitialState()
	require.NoError(t, err)
	assert.Equal(t, []uint64{1}, cs.GetVoters())
	first, _ := l.FirstIndex()
	last, _ := l.LastIndex()
	assert.Equal(t, last, hs.GetCommit())
	es, err := l.Entries(first, last+1, math.MaxUint64)
	require.NoError(t, err)
	var got []string
	for _, e := range es {
		if e.GetType() == pb.EntryNormal && len(e.GetData()) > 0 {
			got = append(got, string(e.GetData()))
		}
	}
	assert.Equal(t, want, got)

	s = newRaftShard(t, db, 5)
	require.NoError(t, s.rn.Campaign())
	s.run(s.leader)
	assert.Greater(t, s.rn.BasicStatus().GetTerm(), hs.GetTerm())
	require.NoError(t, s.rn.Propose([]byte("after-restart")))
	s.run(func() bool { return len(s.applied) == 1 })
	assert.Equal(t, []string{"after-restart"}, s.applied)
}
