package api_test

import (
	"bytes"
	"compress/gzip"
	"crypto/md5"
	"fmt"
	"math/big"
	"net"
	"sort"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/internal/nodetest"
)

// TestEMQXConnectorCallSequence speaks to weir exactly as EMQX's HStreamDB
// data integration does (hstreamdb_erl 0.5.27, reference §6), with none of
// weir's own client code: its test suite's CreateStream, the health check
// (Echo "hello"), producer discovery (ListShards, then LookupResource with
// resType 2 and the decimal shard id for every active shard, a new channel
// to the node named and an Echo on it), and Appends of RAW records grouped
// by shard from the key's MD5, without publishTime, uncompressed and
// gzipped. Every record must land in its shard with the key it was sent
// with, and the record ids must match the records one to one.
func TestEMQXConnectorCallSequence(t *testing.T) {
	node := nodetest.Start(t)
	dial := func(addr string) hstreampb.HStreamApiClient {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		require.NoError(t, err)
		t.Cleanup(func() { conn.Close() })
		return hstreampb.NewHStreamApiClient(conn)
	}
	echo := func(api hstreampb.HStreamApiClient) {
		resp, err := api.Echo(ctxT(t), &hstreampb.EchoRequest{Msg: "hello"})
		require.NoError(t, err)
		require.Equal(t, "hello", resp.GetMsg())
	}
	api := dial(node.Addr) // EMQX's url is http://host:6570

	// EMQX's test suite creates the stream: rf 1, a day of backlog. (It
	// uses one shard; three make discovery and routing do real work.)
	const stream = "emqx_hstreamdb"
	_, err := api.CreateStream(ctxT(t), &hstreampb.Stream{
		StreamName: stream, ReplicationFactor: 1, BacklogDuration: 86400, ShardCount: 3})
	require.NoError(t, err)

	// Health check, then discovery.
	echo(api)
	ls, err := api.ListShards(ctxT(t), &hstreampb.ListShardsRequest{StreamName: stream})
	require.NoError(t, err)
	type shardRange struct {
		id         uint64
		start, end *big.Int
		api        hstreampb.HStreamApiClient
	}
	var shards []shardRange
	for _, s := range ls.GetShards() {
		if !s.GetIsActive() {
			continue
		}
		start, ok1 := new(big.Int).SetString(s.GetStartHashRangeKey(), 10) // binary_to_integer
		end, ok2 := new(big.Int).SetString(s.GetEndHashRangeKey(), 10)
		require.True(t, ok1 && ok2, "hash range %q..%q is not base-10 integers", s.GetStartHashRangeKey(), s.GetEndHashRangeKey())
		sn, err := api.LookupResource(ctxT(t), &hstreampb.LookupResourceRequest{
			ResType: hstreampb.ResourceType_ResShard, ResId: strconv.FormatUint(s.GetShardId(), 10)})
		require.NoError(t, err)
		shardAPI := dial(net.JoinHostPort(sn.GetHost(), strconv.Itoa(int(sn.GetPort()))))
		echo(shardAPI)
		shards = append(shards, shardRange{s.GetShardId(), start, end, shardAPI})
	}
	require.Len(t, shards, 3)
	sort.Slice(shards, func(i, j int) bool { return shards[i].start.Cmp(shards[j].start) < 0 })
	shardOf := func(key string) shardRange { // binary search over inclusive ranges
		sum := md5.Sum([]byte(key))
		h := new(big.Int).SetBytes(sum[:])
		i := sort.Search(len(shards), func(i int) bool { return shards[i].end.Cmp(h) >= 0 })
		require.Less(t, i, len(shards))
		require.True(t, shards[i].start.Cmp(h) <= 0)
		return shards[i]
	}

	// The action renders partition_key (here the MQTT client ID) and the
	// record template, and appends batches per shard.
	type sent struct{ key, payload string }
	want := map[uint64][]sent{}
	batches := map[uint64][]*hstreampb.HStreamRecord{}
	for i := range 60 {
		key := fmt.Sprintf("emqx-client-%d", i%20)
		payload := fmt.Sprintf(`{"clientid":%q,"payload":"reading %d"}`, key, i)
		s := shardOf(key)
		batches[s.id] = append(batches[s.id], &hstreampb.HStreamRecord{
			Header:  &hstreampb.HStreamRecordHeader{Flag: hstreampb.HStreamRecordHeader_RAW, Key: key},
			Payload: []byte(payload),
		})
		want[s.id] = append(want[s.id], sent{key, payload})
	}
	for _, s := range shards {
		recs := batches[s.id]
		require.NotEmpty(t, recs, "shard %d got no key", s.id)
		// Two appends per shard: none compression, then gzip (zlib:gzip).
		half := len(recs) / 2
		for j, part := range [][]*hstreampb.HStreamRecord{recs[:half], recs[half:]} {
			payload, err := proto.Marshal(&hstreampb.BatchHStreamRecords{Records: part})
			require.NoError(t, err)
			comp := hstreampb.CompressionType_None
			if j == 1 {
				var buf bytes.Buffer
				zw := gzip.NewWriter(&buf)
				_, err := zw.Write(payload)
				require.NoError(t, err)
				require.NoError(t, zw.Close())
				payload, comp = buf.Bytes(), hstreampb.CompressionType_Gzip
			}
			resp, err := s.api.Append(ctxT(t), &hstreampb.AppendRequest{
				StreamName: stream,
				ShardId:    s.id,
				Records:    &hstreampb.BatchedRecord{Payload: payload, BatchSize: uint32(len(part)), CompressionType: comp},
			})
			require.NoError(t, err)
			require.Len(t, resp.GetRecordIds(), len(part), "one record id per record")
			for _, id := range resp.GetRecordIds() {
				require.Equal(t, s.id, id.GetShardId())
			}
		}
	}

	// Everything landed, in order, with its key; the server dated it.
	for _, s := range shards {
		got := readShardAll(t, api, stream, s.id)
		require.Len(t, got, len(want[s.id]), "shard %d", s.id)
		for i, r := range got {
			require.Equal(t, want[s.id][i].key, r.key)
			require.Equal(t, want[s.id][i].payload, string(r.payload))
			require.False(t, r.publish.IsZero(), "a record appended without publishTime gets the append time")
		}
	}
}
