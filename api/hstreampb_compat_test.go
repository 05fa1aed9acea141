package api_test

// Wire-compatibility checks of weir's generated descriptors (api/hstreampb)
// against the HStreamDB HStreamApi contract in
// /work/shared/reference/hstream-api.md (protocol 12abd76, server v0.20.3).
//
// Every table below was transcribed by hand from that reference (§1, §2,
// §3.1–§3.7, §3.9), not from api/proto/hstream.proto, so a drift of the .proto
// (a renumbered field, a field turned repeated, a missing RPC, …) shows up
// here as a failure naming the message, field and numbers involved.

import (
	"fmt"
	"sort"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/weir-log/weir/api/hstreampb"
)

const compatPkg = "hstream.server"

// compatField is one field as the reference states it. typ is the reference's
// type written as compatTypeOf renders a descriptor: scalar kind names
// ("uint64"), message and enum names relative to hstream.server ("RecordId",
// "HStreamRecordHeader.Flag"), "g.X" for google.protobuf.X, a "repeated "
// prefix for lists and "map<K,V>" for maps. An empty typ means the reference
// gives no type for that field, so only name and number are checked. oneof is
// the name of the (real) oneof the field belongs to, "" for none.
type compatField struct {
	name  string
	num   protoreflect.FieldNumber
	typ   string
	oneof string
}

type compatMessage struct {
	name   string // relative to hstream.server
	msg    proto.Message
	fields []compatField
}

// f and of keep the table readable.
func f(name string, num protoreflect.FieldNumber, typ string) compatField {
	return compatField{name: name, num: num, typ: typ}
}

func of(oneof, name string, num protoreflect.FieldNumber, typ string) compatField {
	return compatField{name: name, num: num, typ: typ, oneof: oneof}
}

// compatMessages: every message of reference §3.1–§3.7.
var compatMessages = []compatMessage{
	// §3.1 Offsets, record ids.
	{"TimestampOffset", &hstreampb.TimestampOffset{}, []compatField{
		f("timestampInMs", 1, "int64"), f("strictAccuracy", 2, "bool")}},
	{"ShardOffset", &hstreampb.ShardOffset{}, []compatField{
		of("offset", "specialOffset", 1, "SpecialOffset"),
		of("offset", "recordOffset", 2, "RecordId"),
		of("offset", "timestampOffset", 3, "TimestampOffset")}},
	{"StreamOffset", &hstreampb.StreamOffset{}, []compatField{
		of("offset", "specialOffset", 1, "SpecialOffset"),
		of("offset", "timestampOffset", 2, "TimestampOffset")}},
	{"RecordId", &hstreampb.RecordId{}, []compatField{
		f("shardId", 1, "uint64"), f("batchId", 2, "uint64"), f("batchIndex", 3, "uint32")}},

	// §3.2 Records and batches.
	{"BatchedRecord", &hstreampb.BatchedRecord{}, []compatField{
		f("compressionType", 1, "CompressionType"), f("publishTime", 2, "g.Timestamp"),
		f("batchSize", 3, "uint32"), f("payload", 4, "bytes")}},
	{"BatchHStreamRecords", &hstreampb.BatchHStreamRecords{}, []compatField{
		f("records", 1, "repeated HStreamRecord")}},
	{"HStreamRecord", &hstreampb.HStreamRecord{}, []compatField{
		f("header", 1, "HStreamRecordHeader"), f("payload", 2, "bytes")}},
	{"HStreamRecordHeader", &hstreampb.HStreamRecordHeader{}, []compatField{
		f("flag", 1, "HStreamRecordHeader.Flag"), f("attributes", 2, "map<string,string>"),
		f("key", 3, "string")}},
	{"AppendRequest", &hstreampb.AppendRequest{}, []compatField{
		f("streamName", 1, "string"), f("shardId", 2, "uint64"), f("records", 3, "BatchedRecord")}},
	{"AppendResponse", &hstreampb.AppendResponse{}, []compatField{
		f("streamName", 1, "string"), f("shardId", 2, "uint64"),
		f("recordIds", 3, "repeated RecordId")}},
	{"ReceivedRecord", &hstreampb.ReceivedRecord{}, []compatField{
		f("recordIds", 1, "repeated RecordId"), f("record", 2, "BatchedRecord")}},

	// §3.3 Streams and shards.
	{"Stream", &hstreampb.Stream{}, []compatField{
		f("streamName", 1, "string"), f("replicationFactor", 2, "uint32"),
		f("backlogDuration", 3, "uint32"), f("shardCount", 4, "uint32"),
		f("creationTime", 5, "g.Timestamp")}},
	{"DeleteStreamRequest", &hstreampb.DeleteStreamRequest{}, []compatField{
		f("streamName", 1, ""), f("ignoreNonExist", 2, "bool"), f("force", 3, "bool")}},
	{"GetStreamRequest", &hstreampb.GetStreamRequest{}, []compatField{f("name", 1, "string")}},
	{"GetStreamResponse", &hstreampb.GetStreamResponse{}, []compatField{f("stream", 1, "Stream")}},
	{"ListStreamsRequest", &hstreampb.ListStreamsRequest{}, nil},
	{"ListStreamsWithPrefixRequest", &hstreampb.ListStreamsWithPrefixRequest{}, []compatField{
		f("prefix", 1, "string")}},
	{"ListStreamsResponse", &hstreampb.ListStreamsResponse{}, []compatField{
		f("streams", 1, "repeated Stream")}},
	{"Shard", &hstreampb.Shard{}, []compatField{
		f("streamName", 1, "string"), f("shardId", 2, "uint64"),
		f("startHashRangeKey", 3, "string"), f("endHashRangeKey", 4, "string"),
		f("epoch", 5, "uint64"), f("isActive", 6, "bool")}},
	{"ListShardsRequest", &hstreampb.ListShardsRequest{}, []compatField{f("streamName", 1, "")}},
	{"ListShardsResponse", &hstreampb.ListShardsResponse{}, []compatField{
		f("shards", 1, "repeated Shard")}},
	{"TrimStreamRequest", &hstreampb.TrimStreamRequest{}, []compatField{
		f("streamName", 1, ""), f("trimPoint", 2, "StreamOffset")}},
	{"TrimShardRequest", &hstreampb.TrimShardRequest{}, []compatField{
		f("streamName", 1, ""), f("shardId", 2, "uint64"), f("trimPoint", 3, "ShardOffset")}},
	{"TrimShardsRequest", &hstreampb.TrimShardsRequest{}, []compatField{
		f("streamName", 1, ""), f("recordIds", 2, "repeated string")}},
	{"TrimShardsResponse", &hstreampb.TrimShardsResponse{}, []compatField{
		f("trimPoints", 1, "map<uint64,string>")}},
	{"GetTailRecordIdRequest", &hstreampb.GetTailRecordIdRequest{}, []compatField{
		f("streamName", 1, ""), f("shardId", 2, "uint64")}},
	{"GetTailRecordIdResponse", &hstreampb.GetTailRecordIdResponse{}, []compatField{
		f("tailRecordId", 1, "RecordId")}},

	// §3.4 Subscriptions and StreamingFetch.
	{"Subscription", &hstreampb.Subscription{}, []compatField{
		f("subscriptionId", 1, "string"), f("streamName", 2, "string"),
		f("ackTimeoutSeconds", 3, "int32"), f("maxUnackedRecords", 4, "int32"),
		f("offset", 5, "SpecialOffset"), f("creationTime", 6, "g.Timestamp")}},
	{"SubscriptionOffset", &hstreampb.SubscriptionOffset{}, []compatField{
		f("shardId", 1, "uint64"), f("batchId", 2, "uint64")}},
	{"GetSubscriptionRequest", &hstreampb.GetSubscriptionRequest{}, []compatField{f("id", 1, "")}},
	{"GetSubscriptionResponse", &hstreampb.GetSubscriptionResponse{}, []compatField{
		f("subscription", 1, "Subscription"), f("offsets", 2, "repeated SubscriptionOffset")}},
	{"ListSubscriptionsRequest", &hstreampb.ListSubscriptionsRequest{}, nil},
	{"ListSubscriptionsWithPrefixRequest", &hstreampb.ListSubscriptionsWithPrefixRequest{}, []compatField{
		f("prefix", 1, "")}},
	{"ListSubscriptionsResponse", &hstreampb.ListSubscriptionsResponse{}, []compatField{
		f("subscription", 1, "repeated Subscription")}}, // singular name, repeated field
	{"CheckSubscriptionExistRequest", &hstreampb.CheckSubscriptionExistRequest{}, []compatField{
		f("subscriptionId", 1, "")}},
	{"CheckSubscriptionExistResponse", &hstreampb.CheckSubscriptionExistResponse{}, []compatField{
		f("exists", 1, "bool")}},
	{"DeleteSubscriptionRequest", &hstreampb.DeleteSubscriptionRequest{}, []compatField{
		f("subscriptionId", 1, ""), f("force", 2, "bool")}},
	{"ListConsumersRequest", &hstreampb.ListConsumersRequest{}, []compatField{
		f("subscriptionId", 1, "")}},
	{"ListConsumersResponse", &hstreampb.ListConsumersResponse{}, []compatField{
		f("consumers", 1, "repeated Consumer")}},
	{"Consumer", &hstreampb.Consumer{}, []compatField{
		f("name", 1, "string"), f("uri", 2, "string"), f("userAgent", 3, "string")}},
	{"StreamingFetchRequest", &hstreampb.StreamingFetchRequest{}, []compatField{
		f("subscriptionId", 1, "string"), f("consumerName", 2, "string"),
		f("ackIds", 3, "repeated RecordId")}},
	{"StreamingFetchResponse", &hstreampb.StreamingFetchResponse{}, []compatField{
		f("receivedRecords", 1, "ReceivedRecord")}}, // singular since v0.9.4

	// §3.5 Shard readers / reading.
	{"CreateShardReaderRequest", &hstreampb.CreateShardReaderRequest{}, []compatField{
		f("streamName", 1, ""), f("shardId", 2, "uint64"), f("shardOffset", 3, "ShardOffset"),
		f("readerId", 4, "string"), f("timeout", 5, "uint32")}},
	{"CreateShardReaderResponse", &hstreampb.CreateShardReaderResponse{}, []compatField{
		f("streamName", 1, ""), f("shardId", 2, "uint64"), f("shardOffset", 3, "ShardOffset"),
		f("readerId", 4, "string"), f("timeout", 5, "uint32")}},
	{"ReadShardRequest", &hstreampb.ReadShardRequest{}, []compatField{
		f("readerId", 1, ""), f("maxRecords", 2, "uint32")}},
	{"ReadShardResponse", &hstreampb.ReadShardResponse{}, []compatField{
		f("receivedRecords", 1, "repeated ReceivedRecord")}},
	{"DeleteShardReaderRequest", &hstreampb.DeleteShardReaderRequest{}, []compatField{
		f("readerId", 1, "")}},
	{"ListShardReadersRequest", &hstreampb.ListShardReadersRequest{}, nil},
	{"ListShardReadersResponse", &hstreampb.ListShardReadersResponse{}, []compatField{
		f("readerId", 1, "repeated string")}},
	{"LookupShardReaderRequest", &hstreampb.LookupShardReaderRequest{}, []compatField{
		f("readerId", 1, "")}},
	{"LookupShardReaderResponse", &hstreampb.LookupShardReaderResponse{}, []compatField{
		f("readerId", 1, ""), f("serverNode", 2, "ServerNode")}},
	{"ReadShardStreamRequest", &hstreampb.ReadShardStreamRequest{}, []compatField{
		f("readerId", 1, ""), f("shardId", 2, "uint64"), f("from", 3, "ShardOffset"),
		f("maxReadBatches", 4, "uint64"), f("until", 5, "ShardOffset"),
		f("streamName", 6, "string")}},
	{"ReadShardStreamResponse", &hstreampb.ReadShardStreamResponse{}, []compatField{
		f("receivedRecords", 1, "repeated ReceivedRecord")}},
	{"ReadStreamRequest", &hstreampb.ReadStreamRequest{}, []compatField{
		f("readerId", 1, ""), f("streamName", 2, ""), f("from", 3, "StreamOffset"),
		f("until", 4, "StreamOffset"), f("maxReadBatches", 5, "uint64")}},
	{"ReadStreamResponse", &hstreampb.ReadStreamResponse{}, []compatField{
		f("receivedRecords", 1, "repeated ReceivedRecord")}},
	{"ReadSingleShardStreamRequest", &hstreampb.ReadSingleShardStreamRequest{}, []compatField{
		f("readerId", 1, ""), f("streamName", 2, ""), f("from", 3, "ShardOffset"),
		f("until", 4, "ShardOffset"), f("maxReadBatches", 5, "uint64")}},
	{"ReadSingleShardStreamResponse", &hstreampb.ReadSingleShardStreamResponse{}, []compatField{
		f("receivedRecords", 1, "repeated ReceivedRecord")}},
	{"ReadStreamByKeyRequest", &hstreampb.ReadStreamByKeyRequest{}, []compatField{
		f("readerId", 1, ""), f("streamName", 2, ""), f("key", 3, "string"),
		f("from", 4, "ShardOffset"), f("until", 5, "ShardOffset"),
		f("readRecordCount", 6, "uint64")}},
	{"ReadStreamByKeyResponse", &hstreampb.ReadStreamByKeyResponse{}, []compatField{
		f("recordIds", 1, "repeated RecordId"), f("receivedRecords", 2, "repeated HStreamRecord")}},

	// §3.6 Cluster and lookup.
	{"EchoRequest", &hstreampb.EchoRequest{}, []compatField{f("msg", 1, "string")}},
	{"EchoResponse", &hstreampb.EchoResponse{}, []compatField{f("msg", 1, "string")}},
	{"DescribeClusterResponse", &hstreampb.DescribeClusterResponse{}, []compatField{ // v0.15.2+ numbering
		f("protocolVersion", 1, "string"), f("serverNodes", 2, "repeated ServerNode"),
		f("serverNodesStatus", 3, "repeated ServerNodeStatus"), f("clusterUpTime", 4, "uint64")}},
	{"ServerNode", &hstreampb.ServerNode{}, []compatField{
		f("id", 1, "uint32"), f("host", 2, "string"), f("port", 3, "uint32"),
		f("version", 4, "HStreamVersion")}},
	{"HStreamVersion", &hstreampb.HStreamVersion{}, []compatField{
		f("version", 1, "string"), f("commit", 2, "string")}},
	{"ServerNodeStatus", &hstreampb.ServerNodeStatus{}, []compatField{
		f("node", 1, "ServerNode"), f("state", 2, "NodeState")}},
	{"LookupShardRequest", &hstreampb.LookupShardRequest{}, []compatField{f("shardId", 1, "uint64")}},
	{"LookupShardResponse", &hstreampb.LookupShardResponse{}, []compatField{
		f("shardId", 1, "uint64"), f("serverNode", 2, "ServerNode")}},
	{"LookupSubscriptionRequest", &hstreampb.LookupSubscriptionRequest{}, []compatField{
		f("subscriptionId", 1, "")}},
	{"LookupSubscriptionResponse", &hstreampb.LookupSubscriptionResponse{}, []compatField{
		f("subscriptionId", 1, ""), f("serverNode", 2, "ServerNode")}},
	{"LookupResourceRequest", &hstreampb.LookupResourceRequest{}, []compatField{
		f("resType", 1, "ResourceType"), f("resId", 2, "string")}},
	{"LookupKeyRequest", &hstreampb.LookupKeyRequest{}, []compatField{f("partitionKey", 1, "string")}},

	// §3.7 Admin and stats.
	{"AdminCommandRequest", &hstreampb.AdminCommandRequest{}, []compatField{f("command", 1, "string")}},
	{"AdminCommandResponse", &hstreampb.AdminCommandResponse{}, []compatField{f("result", 1, "string")}},
	{"StatsIntervalVals", &hstreampb.StatsIntervalVals{}, []compatField{
		f("intervals", 1, "repeated int32")}},
	{"StatsDoubleVals", &hstreampb.StatsDoubleVals{}, []compatField{f("vals", 1, "repeated double")}},
	{"PerStreamTimeSeriesStatsRequest", &hstreampb.PerStreamTimeSeriesStatsRequest{}, []compatField{
		f("method", 1, ""), f("streamName", 2, ""), f("intervals", 3, "")}},
	{"PerStreamTimeSeriesStatsResponse", &hstreampb.PerStreamTimeSeriesStatsResponse{}, []compatField{
		f("stats", 1, "StatsDoubleVals")}},
	{"PerStreamTimeSeriesStatsAllRequest", &hstreampb.PerStreamTimeSeriesStatsAllRequest{}, []compatField{
		f("method", 1, ""), f("intervals", 2, "")}},
	{"PerStreamTimeSeriesStatsAllResponse", &hstreampb.PerStreamTimeSeriesStatsAllResponse{}, []compatField{
		f("stats", 1, "map<string,StatsDoubleVals>")}},
	{"StatType", &hstreampb.StatType{}, []compatField{
		of("stat", "streamStat", 1, "StreamStats"), of("stat", "subStat", 2, "SubscriptionStats"),
		of("stat", "connStat", 3, "ConnectorStats"), of("stat", "queryStat", 4, "QueryStats"),
		of("stat", "viewStat", 5, "ViewStats"), of("stat", "cacheStoreStat", 6, "CacheStoreStats")}},
	{"StatValue", &hstreampb.StatValue{}, []compatField{
		f("statType", 1, ""), f("statValues", 2, "map<string,int64>")}},
	{"StatError", &hstreampb.StatError{}, []compatField{f("statType", 1, ""), f("message", 2, "")}},
	{"GetStatsRequest", &hstreampb.GetStatsRequest{}, []compatField{f("stats", 1, "repeated StatType")}},
	{"GetStatsResponse", &hstreampb.GetStatsResponse{}, []compatField{
		f("statsValues", 1, ""), f("errors", 2, "")}},
}

// compatShortName renders a full name relative to hstream.server, and
// google.protobuf.X as g.X (the reference's spelling).
func compatShortName(n protoreflect.FullName) string {
	s := string(n)
	if r, ok := strings.CutPrefix(s, compatPkg+"."); ok {
		return r
	}
	if r, ok := strings.CutPrefix(s, "google.protobuf."); ok {
		return "g." + r
	}
	return s
}

func compatElemType(fd protoreflect.FieldDescriptor) string {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return compatShortName(fd.Message().FullName())
	case protoreflect.EnumKind:
		return compatShortName(fd.Enum().FullName())
	default:
		return fd.Kind().String()
	}
}

// compatTypeOf renders a field's wire type in the table's notation.
func compatTypeOf(fd protoreflect.FieldDescriptor) string {
	switch {
	case fd.IsMap():
		return "map<" + compatElemType(fd.MapKey()) + "," + compatElemType(fd.MapValue()) + ">"
	case fd.IsList():
		return "repeated " + compatElemType(fd)
	default:
		return compatElemType(fd)
	}
}

// compatOneofOf is the name of the real (non-synthetic) oneof holding fd.
func compatOneofOf(fd protoreflect.FieldDescriptor) string {
	if o := fd.ContainingOneof(); o != nil && !o.IsSynthetic() {
		return string(o.Name())
	}
	return ""
}

func TestCompatMessages(t *testing.T) {
	seen := map[string]bool{}
	nFields, nTyped := 0, 0
	for _, m := range compatMessages {
		if seen[m.name] {
			t.Fatalf("table lists message %s twice", m.name)
		}
		seen[m.name] = true
		nFields += len(m.fields)
		for _, w := range m.fields {
			if w.typ != "" {
				nTyped++
			}
		}
		t.Run(m.name, func(t *testing.T) {
			md := m.msg.ProtoReflect().Descriptor()
			if got, want := md.FullName(), protoreflect.FullName(compatPkg+"."+m.name); got != want {
				t.Errorf("message %s: descriptor full name is %s, want %s", m.name, got, want)
			}
			fields := md.Fields()
			listed := map[protoreflect.Name]bool{}
			for _, w := range m.fields {
				listed[protoreflect.Name(w.name)] = true
				fd := fields.ByName(protoreflect.Name(w.name))
				if fd == nil {
					if other := fields.ByNumber(w.num); other != nil {
						t.Errorf("%s.%s: missing; number %d is used by field %q instead",
							m.name, w.name, w.num, other.Name())
					} else {
						t.Errorf("%s.%s: missing (reference: %s = %d)", m.name, w.name, w.name, w.num)
					}
					continue
				}
				if fd.Number() != w.num {
					t.Errorf("%s.%s: field number %d, reference says %d", m.name, w.name, fd.Number(), w.num)
				}
				if w.typ != "" {
					if got := compatTypeOf(fd); got != w.typ {
						t.Errorf("%s.%s (= %d): type %q, reference says %q", m.name, w.name, w.num, got, w.typ)
					}
				}
				if got := compatOneofOf(fd); got != w.oneof {
					switch {
					case w.oneof == "":
						t.Errorf("%s.%s (= %d): is in oneof %q, reference has it outside any oneof",
							m.name, w.name, w.num, got)
					case got == "":
						t.Errorf("%s.%s (= %d): not in a oneof, reference puts it in oneof %q",
							m.name, w.name, w.num, w.oneof)
					default:
						t.Errorf("%s.%s (= %d): in oneof %q, reference says oneof %q",
							m.name, w.name, w.num, got, w.oneof)
					}
				}
			}
			for i := 0; i < fields.Len(); i++ {
				fd := fields.Get(i)
				if !listed[fd.Name()] {
					t.Errorf("%s: extra field %s = %d (%s) not in the reference",
						m.name, fd.Name(), fd.Number(), compatTypeOf(fd))
				}
			}
		})
	}
	t.Logf("checked %d messages, %d fields (%d with a type from the reference)",
		len(compatMessages), nFields, nTyped)
}

// compatEnumValue is one enum value of the reference.
type compatEnumValue struct {
	name string
	num  protoreflect.EnumNumber
}

type compatEnum struct {
	name   string // relative to hstream.server
	desc   protoreflect.EnumDescriptor
	values []compatEnumValue
}

// compatErrorCodes: all values of reference §3.9 (group prefix + short name).
func compatErrorCodes() []compatEnumValue {
	vals := []compatEnumValue{{"InternalError", 0}}
	group := func(prefix string, first protoreflect.EnumNumber, names ...string) {
		for i, n := range names {
			vals = append(vals, compatEnumValue{prefix + n, first + protoreflect.EnumNumber(i)})
		}
	}
	group("Stream", 200, "NotFound", "Exists", "FoundSubscription", "InvalidReplicaFactor",
		"InvalidObjectIdentifier", "InvalidShardCount", "EmptyBatchedRecord", "InvalidRecordSize",
		"InvalidOffset", "InvalidRecordId", "ShardNotExists")
	group("Subscription", 300, "NotFound", "Exists", "CreationOnNonExistentStream", "InvalidOffset",
		"InvalidObjectIdentifier", "FoundActiveConsumers")
	group("Query", 400, "NotFound", "Exists", "InvalidSQL", "FoundAssociatedView",
		"InvalidObjectIdentifier", "StillRunning", "NotRunning", "NotTerminated", "AlreadyTerminated")
	group("View", 500, "NotFound", "Exists", "InvalidSQL", "InvalidObjectIdentifier")
	group("Connector", 600, "NotFound", "Exists", "InvalidType", "InvalidObjectIdentifier",
		"CheckFailed", "Unimplemented", "InvalidStatus")
	vals = append(vals, compatEnumValue{"WrongServer", 800})
	group("ShardReader", 900, "InvalidObjectIdentifier", "ConflictOffset", "TooManyShards",
		"DataLossGap", "AccessGap", "NotInConfigGap", "UnknownGap")
	return vals
}

func TestCompatEnums(t *testing.T) {
	enums := []compatEnum{
		{"SpecialOffset", hstreampb.SpecialOffset(0).Descriptor(), []compatEnumValue{
			{"EARLIEST", 0}, {"LATEST", 1}}},
		{"CompressionType", hstreampb.CompressionType(0).Descriptor(), []compatEnumValue{
			{"None", 0}, {"Gzip", 1}, {"Zstd", 2}}},
		{"HStreamRecordHeader.Flag", hstreampb.HStreamRecordHeader_Flag(0).Descriptor(), []compatEnumValue{
			{"JSON", 0}, {"RAW", 1}}},
		{"NodeState", hstreampb.NodeState(0).Descriptor(), []compatEnumValue{
			{"Starting", 0}, {"Running", 1}, {"Unavailable", 2}, {"Dead", 3}}},
		{"ResourceType", hstreampb.ResourceType(0).Descriptor(), []compatEnumValue{
			{"ResStream", 0}, {"ResSubscription", 1}, {"ResShard", 2}, {"ResShardReader", 3},
			{"ResConnector", 4}, {"ResQuery", 5}, {"ResView", 6}}},
		{"ErrorCode", hstreampb.ErrorCode(0).Descriptor(), compatErrorCodes()},
	}
	nValues := 0
	for _, e := range enums {
		nValues += len(e.values)
		t.Run(e.name, func(t *testing.T) {
			if got, want := e.desc.FullName(), protoreflect.FullName(compatPkg+"."+e.name); got != want {
				t.Errorf("enum %s: descriptor full name is %s, want %s", e.name, got, want)
			}
			vals := e.desc.Values()
			listed := map[protoreflect.Name]bool{}
			for _, w := range e.values {
				if listed[protoreflect.Name(w.name)] {
					t.Fatalf("table lists %s.%s twice", e.name, w.name)
				}
				listed[protoreflect.Name(w.name)] = true
				vd := vals.ByName(protoreflect.Name(w.name))
				if vd == nil {
					if other := vals.ByNumber(w.num); other != nil {
						t.Errorf("%s.%s: missing; number %d is named %q instead", e.name, w.name, w.num, other.Name())
					} else {
						t.Errorf("%s.%s: missing (reference: %s = %d)", e.name, w.name, w.name, w.num)
					}
					continue
				}
				if vd.Number() != w.num {
					t.Errorf("%s.%s: value %d, reference says %d", e.name, w.name, vd.Number(), w.num)
				}
			}
			for i := 0; i < vals.Len(); i++ {
				if vd := vals.Get(i); !listed[vd.Name()] {
					t.Errorf("%s: extra value %s = %d not in the reference", e.name, vd.Name(), vd.Number())
				}
			}
		})
	}
	if n := len(compatErrorCodes()); n != 46 {
		t.Errorf("ErrorCode table has %d values, §3.9 lists 46", n)
	}

	// §3.7 gives only the number ranges of the stats enums (names are not on
	// the wire): StreamStats 0–5, SubscriptionStats 0–8, ConnectorStats 0–2,
	// QueryStats 0–2, ViewStats 0, CacheStoreStats 0–8.
	ranges := []struct {
		name string
		desc protoreflect.EnumDescriptor
		max  protoreflect.EnumNumber
	}{
		{"StreamStats", hstreampb.StreamStats(0).Descriptor(), 5},
		{"SubscriptionStats", hstreampb.SubscriptionStats(0).Descriptor(), 8},
		{"ConnectorStats", hstreampb.ConnectorStats(0).Descriptor(), 2},
		{"QueryStats", hstreampb.QueryStats(0).Descriptor(), 2},
		{"ViewStats", hstreampb.ViewStats(0).Descriptor(), 0},
		{"CacheStoreStats", hstreampb.CacheStoreStats(0).Descriptor(), 8},
	}
	for _, r := range ranges {
		if got, want := r.desc.FullName(), protoreflect.FullName(compatPkg+"."+r.name); got != want {
			t.Errorf("enum %s: descriptor full name is %s, want %s", r.name, got, want)
		}
		vals := r.desc.Values()
		var got []int
		for i := 0; i < vals.Len(); i++ {
			got = append(got, int(vals.Get(i).Number()))
		}
		sort.Ints(got)
		var want []int
		for n := 0; n <= int(r.max); n++ {
			want = append(want, n)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("enum %s: value numbers %v, reference says %v", r.name, got, want)
		}
		nValues += int(r.max) + 1
	}
	t.Logf("checked %d enums, %d values", len(enums)+len(ranges), nValues)
}

type compatKind int

const (
	compatUnary compatKind = iota
	compatServerStream
	compatBidi
)

func (k compatKind) String() string {
	switch k {
	case compatUnary:
		return "unary"
	case compatServerStream:
		return "server-stream"
	case compatBidi:
		return "bidi"
	default:
		return "client-stream"
	}
}

func compatKindOf(clientStreams, serverStreams bool) compatKind {
	switch {
	case clientStreams && serverStreams:
		return compatBidi
	case serverStreams:
		return compatServerStream
	case clientStreams:
		return compatKind(3)
	default:
		return compatUnary
	}
}

type compatRPC struct {
	name     string
	request  string
	response string
	kind     compatKind
}

// compatRPCs: the 65 RPCs of reference §2, in its order.
var compatRPCs = []compatRPC{
	{"Echo", "EchoRequest", "EchoResponse", compatUnary},
	{"CreateStream", "Stream", "Stream", compatUnary},
	{"DeleteStream", "DeleteStreamRequest", "g.Empty", compatUnary},
	{"TrimStream", "TrimStreamRequest", "g.Empty", compatUnary},
	{"TrimShards", "TrimShardsRequest", "TrimShardsResponse", compatUnary},
	{"GetStream", "GetStreamRequest", "GetStreamResponse", compatUnary},
	{"ListStreams", "ListStreamsRequest", "ListStreamsResponse", compatUnary},
	{"ListStreamsWithPrefix", "ListStreamsWithPrefixRequest", "ListStreamsResponse", compatUnary},
	{"LookupShard", "LookupShardRequest", "LookupShardResponse", compatUnary},
	{"Append", "AppendRequest", "AppendResponse", compatUnary},
	{"GetTailRecordId", "GetTailRecordIdRequest", "GetTailRecordIdResponse", compatUnary},
	{"ListShards", "ListShardsRequest", "ListShardsResponse", compatUnary},
	{"TrimShard", "TrimShardRequest", "g.Empty", compatUnary},
	{"CreateShardReader", "CreateShardReaderRequest", "CreateShardReaderResponse", compatUnary},
	{"LookupShardReader", "LookupShardReaderRequest", "LookupShardReaderResponse", compatUnary},
	{"ReadShard", "ReadShardRequest", "ReadShardResponse", compatUnary},
	{"ReadShardStream", "ReadShardStreamRequest", "ReadShardStreamResponse", compatServerStream},
	{"ListShardReaders", "ListShardReadersRequest", "ListShardReadersResponse", compatUnary},
	{"DeleteShardReader", "DeleteShardReaderRequest", "g.Empty", compatUnary},
	{"ReadStream", "ReadStreamRequest", "ReadStreamResponse", compatServerStream},
	{"ReadSingleShardStream", "ReadSingleShardStreamRequest", "ReadSingleShardStreamResponse", compatServerStream},
	{"ReadStreamByKey", "ReadStreamByKeyRequest", "ReadStreamByKeyResponse", compatBidi},
	{"CreateSubscription", "Subscription", "Subscription", compatUnary},
	{"GetSubscription", "GetSubscriptionRequest", "GetSubscriptionResponse", compatUnary},
	{"ListSubscriptions", "ListSubscriptionsRequest", "ListSubscriptionsResponse", compatUnary},
	{"ListSubscriptionsWithPrefix", "ListSubscriptionsWithPrefixRequest", "ListSubscriptionsResponse", compatUnary},
	{"ListConsumers", "ListConsumersRequest", "ListConsumersResponse", compatUnary},
	{"CheckSubscriptionExist", "CheckSubscriptionExistRequest", "CheckSubscriptionExistResponse", compatUnary},
	{"DeleteSubscription", "DeleteSubscriptionRequest", "g.Empty", compatUnary},
	{"LookupSubscription", "LookupSubscriptionRequest", "LookupSubscriptionResponse", compatUnary},
	{"StreamingFetch", "StreamingFetchRequest", "StreamingFetchResponse", compatBidi},
	{"DescribeCluster", "g.Empty", "DescribeClusterResponse", compatUnary},
	{"LookupResource", "LookupResourceRequest", "ServerNode", compatUnary},
	{"LookupKey", "LookupKeyRequest", "ServerNode", compatUnary},
	{"SendAdminCommand", "AdminCommandRequest", "AdminCommandResponse", compatUnary},
	{"PerStreamTimeSeriesStats", "PerStreamTimeSeriesStatsRequest", "PerStreamTimeSeriesStatsResponse", compatUnary},
	{"PerStreamTimeSeriesStatsAll", "PerStreamTimeSeriesStatsAllRequest", "PerStreamTimeSeriesStatsAllResponse", compatUnary},
	{"GetStats", "GetStatsRequest", "GetStatsResponse", compatUnary},
	{"ExecuteQuery", "CommandQuery", "CommandQueryResponse", compatUnary},
	{"CreateQuery", "CreateQueryRequest", "Query", compatUnary},
	{"CreateQueryWithNamespace", "CreateQueryWithNamespaceRequest", "Query", compatUnary},
	{"ListQueries", "ListQueriesRequest", "ListQueriesResponse", compatUnary},
	{"GetQuery", "GetQueryRequest", "Query", compatUnary},
	{"TerminateQuery", "TerminateQueryRequest", "g.Empty", compatUnary},
	{"DeleteQuery", "DeleteQueryRequest", "g.Empty", compatUnary},
	{"ResumeQuery", "ResumeQueryRequest", "g.Empty", compatUnary},
	{"PauseQuery", "PauseQueryRequest", "g.Empty", compatUnary},
	{"ParseSql", "ParseSqlRequest", "ParseSqlResponse", compatUnary},
	{"RegisterSchema", "Schema", "g.Empty", compatUnary},
	{"GetSchema", "GetSchemaRequest", "Schema", compatUnary},
	{"UnregisterSchema", "UnregisterSchemaRequest", "g.Empty", compatUnary},
	{"CreateConnector", "CreateConnectorRequest", "Connector", compatUnary},
	{"ListConnectors", "ListConnectorsRequest", "ListConnectorsResponse", compatUnary},
	{"GetConnector", "GetConnectorRequest", "Connector", compatUnary},
	{"GetConnectorSpec", "GetConnectorSpecRequest", "GetConnectorSpecResponse", compatUnary},
	{"GetConnectorLogs", "GetConnectorLogsRequest", "GetConnectorLogsResponse", compatUnary},
	{"DeleteConnector", "DeleteConnectorRequest", "g.Empty", compatUnary},
	{"PauseConnector", "PauseConnectorRequest", "g.Empty", compatUnary},
	{"ResumeConnector", "ResumeConnectorRequest", "g.Empty", compatUnary},
	{"AlterConnectorConfig", "AlterConnectorConfigRequest", "g.Empty", compatUnary},
	{"ListViews", "ListViewsRequest", "ListViewsResponse", compatUnary},
	{"GetView", "GetViewRequest", "View", compatUnary},
	{"DeleteView", "DeleteViewRequest", "g.Empty", compatUnary},
	{"ExecuteViewQuery", "ExecuteViewQueryRequest", "ExecuteViewQueryResponse", compatUnary},
	{"ExecuteViewQueryWithNamespace", "ExecuteViewQueryWithNamespaceRequest", "ExecuteViewQueryResponse", compatUnary},
}

func TestCompatService(t *testing.T) {
	if len(compatRPCs) != 65 {
		t.Fatalf("reference table has %d RPCs, §2 lists 65", len(compatRPCs))
	}
	want := map[string]compatRPC{}
	for _, r := range compatRPCs {
		if _, dup := want[r.name]; dup {
			t.Fatalf("reference table lists RPC %s twice", r.name)
		}
		want[r.name] = r
	}

	// The grpc-go service descriptor: what the server actually registers.
	sd := hstreampb.HStreamApi_ServiceDesc
	if want := compatPkg + ".HStreamApi"; sd.ServiceName != want {
		t.Errorf("HStreamApi_ServiceDesc.ServiceName = %q, want %q", sd.ServiceName, want)
	}
	got := map[string]compatKind{}
	for _, m := range sd.Methods {
		if _, dup := got[m.MethodName]; dup {
			t.Errorf("ServiceDesc registers %s twice", m.MethodName)
		}
		got[m.MethodName] = compatUnary
	}
	for _, s := range sd.Streams {
		if _, dup := got[s.StreamName]; dup {
			t.Errorf("ServiceDesc registers %s twice", s.StreamName)
		}
		got[s.StreamName] = compatKindOf(s.ClientStreams, s.ServerStreams)
	}
	for _, r := range compatRPCs {
		k, ok := got[r.name]
		if !ok {
			t.Errorf("ServiceDesc: RPC %s missing (/%s.HStreamApi/%s)", r.name, compatPkg, r.name)
			continue
		}
		if k != r.kind {
			t.Errorf("ServiceDesc: RPC %s is %s, reference says %s", r.name, k, r.kind)
		}
	}
	for name, k := range got {
		if _, ok := want[name]; !ok {
			t.Errorf("ServiceDesc: extra RPC %s (%s) not in the reference", name, k)
		}
	}

	// The protoreflect service descriptor: method paths and message types.
	fd := hstreampb.File_hstream_proto
	svc := fd.Services().ByName("HStreamApi")
	if svc == nil {
		t.Fatalf("file %s has no service HStreamApi", fd.Path())
	}
	if svc.FullName() != compatPkg+".HStreamApi" {
		t.Errorf("service full name %s, want %s.HStreamApi", svc.FullName(), compatPkg)
	}
	methods := svc.Methods()
	if methods.Len() != len(compatRPCs) {
		t.Errorf("service descriptor has %d methods, reference has %d", methods.Len(), len(compatRPCs))
	}
	for _, r := range compatRPCs {
		md := methods.ByName(protoreflect.Name(r.name))
		if md == nil {
			t.Errorf("service descriptor: method %s missing", r.name)
			continue
		}
		if path := "/" + string(svc.FullName()) + "/" + string(md.Name()); path != "/hstream.server.HStreamApi/"+r.name {
			t.Errorf("method %s: path %s", r.name, path)
		}
		if got := compatShortName(md.Input().FullName()); got != r.request {
			t.Errorf("method %s: request type %s, reference says %s", r.name, got, r.request)
		}
		if got := compatShortName(md.Output().FullName()); got != r.response {
			t.Errorf("method %s: response type %s, reference says %s", r.name, got, r.response)
		}
		if k := compatKindOf(md.IsStreamingClient(), md.IsStreamingServer()); k != r.kind {
			t.Errorf("method %s: descriptor says %s, reference says %s", r.name, k, r.kind)
		}
	}
	for i := 0; i < methods.Len(); i++ {
		if name := string(methods.Get(i).Name()); want[name].name == "" {
			t.Errorf("service descriptor: extra method %s not in the reference", name)
		}
	}
	t.Logf("checked %d RPCs (service %s)", len(compatRPCs), sd.ServiceName)
}

func TestCompatFile(t *testing.T) {
	fd := (&hstreampb.AppendRequest{}).ProtoReflect().Descriptor().ParentFile()
	if fd.Package() != compatPkg {
		t.Errorf("file %s: package %q, want %q", fd.Path(), fd.Package(), compatPkg)
	}
	if fd.Syntax() != protoreflect.Proto3 {
		t.Errorf("file %s: syntax %v, want proto3", fd.Path(), fd.Syntax())
	}
	if fd != hstreampb.File_hstream_proto {
		t.Errorf("AppendRequest is declared in %s, not in hstreampb.File_hstream_proto", fd.Path())
	}
	// Every message of the table lives in this one file / package.
	for _, m := range compatMessages {
		if p := m.msg.ProtoReflect().Descriptor().ParentFile(); p.Package() != compatPkg {
			t.Errorf("message %s: package %q, want %q", m.name, p.Package(), compatPkg)
		}
	}
}
