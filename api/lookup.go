package api

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/weir-log/weir/api/hstreampb"
	"github.com/weir-log/weir/cluster"
)

// protocolVersion is what HStreamDB servers report in DescribeCluster.
const protocolVersion = "0.1.0"

// serverFor returns the node that serves a resource: kind is the resource
// type's name ("ResShard", "ResShardReader", "ResSubscription", …, or "key"
// for LookupKey) and id names it. Every lookup goes through here:
//
//   - a shard: its raft leader, or while it has none the replica the cluster
//     prefers, so appends and reads go where they are cheapest;
//   - a shard reader: the leader of its shard when the reader exists, else a
//     node picked by its id. Any node can serve any reader (a shard it does
//     not host is read remotely), so a lookup never fails for a reader;
//   - a subscription: its owner, the one node that runs the consumer group;
//   - a partition key and every other resource: a node picked by the id.
//     HStreamDB clients use these answers only as a hint.
func (s *Service) serverFor(ctx context.Context, kind, id string) (*hstreampb.ServerNode, error) {
	ni, err := s.nodeFor(ctx, kind, id)
	if err != nil {
		return nil, fmt.Errorf("lookup of %s %q: %w", kind, id, err)
	}
	return s.serverNode(ni)
}

func (s *Service) nodeFor(ctx context.Context, kind, id string) (cluster.NodeInfo, error) {
	switch kind {
	case hstreampb.ResourceType_ResShard.String():
		shardID, err := strconv.ParseUint(id, 10, 64)
		if err != nil {
			return cluster.NodeInfo{}, errorf(errInvalidResourceID, "resId %q of a ResShard is not a decimal shard id", id)
		}
		return s.node.ShardLeader(shardID)
	case hstreampb.ResourceType_ResShardReader.String():
		// A reader whose shard has gone, or whose leader cannot be named
		// right now, is still served by whichever node the client reaches;
		// the picked one is as good as any.
		if r, err := s.node.Reader(id); err == nil {
			if ni, err := s.node.ShardLeader(r.ShardID); err == nil {
				return ni, nil
			}
		}
		return s.pickNode(kind, id), nil
	case hstreampb.ResourceType_ResSubscription.String():
		return s.node.SubscriptionOwner(ctx, id)
	default:
		return s.pickNode(kind, id), nil
	}
}

// pickNode chooses a live node for a resource that any node can serve (a
// partition key, a shard reader not created yet): the cluster's placement
// of the key, so every node answers the same.
func (s *Service) pickNode(kind, id string) cluster.NodeInfo {
	return s.node.PlaceKey(kind + "/" + id)
}

// serverNode converts a node's registration to what clients dial.
func (s *Service) serverNode(ni cluster.NodeInfo) (*hstreampb.ServerNode, error) {
	host, portText, err := net.SplitHostPort(ni.GRPCAddr)
	if err != nil {
		return nil, fmt.Errorf("node %d advertises gRPC address %q, which is not host:port: %w", ni.ID, ni.GRPCAddr, err)
	}
	port, err := strconv.ParseUint(portText, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("node %d advertises gRPC address %q, whose port is not a number from 0 to 65535", ni.ID, ni.GRPCAddr)
	}
	if ni.ID > math.MaxUint32 {
		return nil, fmt.Errorf("node id %d does not fit ServerNode.id (uint32)", ni.ID)
	}
	v := &hstreampb.HStreamVersion{Version: strings.TrimPrefix(ni.Version, "v")}
	if ni.ID == s.node.Self().ID {
		v = &hstreampb.HStreamVersion{Version: strings.TrimPrefix(s.opts.Version, "v"), Commit: s.opts.Commit}
	}
	return &hstreampb.ServerNode{Id: uint32(ni.ID), Host: host, Port: uint32(port), Version: v}, nil
}

// DescribeCluster lists the nodes: serverNodes the live ones (Starting or
// Running), which clients replace their server list with, and
// serverNodesStatus every node ever registered, with its state.
func (s *Service) DescribeCluster(ctx context.Context, req *emptypb.Empty) (*hstreampb.DescribeClusterResponse, error) {
	return unary(ctx, s, "DescribeCluster", req, s.describeCluster)
}

// describeCluster answers from the node's membership cache, not from etcd,
// so it works while etcd is unreachable (with the states last seen).
func (s *Service) describeCluster(_ context.Context, _ *emptypb.Empty) (*hstreampb.DescribeClusterResponse, error) {
	members := s.node.Cluster()
	// The node answering is alive whatever its cache holds; before the cache
	// has loaded it would otherwise answer with no node at all.
	self := s.node.Self()
	if !slices.ContainsFunc(members, func(m cluster.Member) bool { return m.ID == self.ID }) {
		members = append(members, cluster.Member{NodeInfo: self, State: cluster.NodeRunning, Since: s.node.StartedAt()})
	}
	slices.SortFunc(members, func(a, b cluster.Member) int { return cmp.Compare(a.ID, b.ID) })
	resp := &hstreampb.DescribeClusterResponse{
		ProtocolVersion: protocolVersion,
		ClusterUpTime:   uint64(max(time.Since(s.node.StartedAt()), 0) / time.Second),
	}
	for _, m := range members {
		sn, err := s.serverNode(m.NodeInfo)
		if err != nil {
			return nil, err
		}
		if m.State == cluster.NodeStarting || m.State == cluster.NodeRunning {
			resp.ServerNodes = append(resp.ServerNodes, sn)
		}
		resp.ServerNodesStatus = append(resp.ServerNodesStatus,
			&hstreampb.ServerNodeStatus{Node: sn, State: nodeStatePB(m.State)})
	}
	return resp, nil
}

// nodeStatePB is a member's state as HStreamDB names it; the two enums are
// the same four states.
func nodeStatePB(st cluster.NodeState) hstreampb.NodeState {
	switch st {
	case cluster.NodeStarting:
		return hstreampb.NodeState_Starting
	case cluster.NodeRunning:
		return hstreampb.NodeState_Running
	case cluster.NodeDead:
		return hstreampb.NodeState_Dead
	default: // NodeUnavailable, and any state this code does not know
		return hstreampb.NodeState_Unavailable
	}
}

// LookupShard returns the node that serves a shard.
func (s *Service) LookupShard(ctx context.Context, req *hstreampb.LookupShardRequest) (*hstreampb.LookupShardResponse, error) {
	return unary(ctx, s, "LookupShard", req, s.lookupShard)
}

func (s *Service) lookupShard(ctx context.Context, req *hstreampb.LookupShardRequest) (*hstreampb.LookupShardResponse, error) {
	id := req.GetShardId()
	if _, err := s.shard(id); err != nil {
		return nil, err
	}
	sn, err := s.serverFor(ctx, hstreampb.ResourceType_ResShard.String(), strconv.FormatUint(id, 10))
	if err != nil {
		return nil, err
	}
	return &hstreampb.LookupShardResponse{ShardId: id, ServerNode: sn}, nil
}

// LookupResource returns the node that serves a resource of any type. A
// ResShard's resId is the decimal shard id.
func (s *Service) LookupResource(ctx context.Context, req *hstreampb.LookupResourceRequest) (*hstreampb.ServerNode, error) {
	return unary(ctx, s, "LookupResource", req, s.lookupResource)
}

func (s *Service) lookupResource(ctx context.Context, req *hstreampb.LookupResourceRequest) (*hstreampb.ServerNode, error) {
	kind, id := req.GetResType(), req.GetResId()
	if _, known := hstreampb.ResourceType_name[int32(kind)]; !known {
		return nil, errorf(errInvalidResourceID, "LookupResource: unknown resource type %d (resId %q)", kind, id)
	}
	if kind == hstreampb.ResourceType_ResShard {
		shardID, err := strconv.ParseUint(id, 10, 64)
		if err != nil {
			return nil, errorf(errInvalidResourceID, "LookupResource: resId %q of a ResShard is not a decimal shard id", id)
		}
		if _, err := s.shard(shardID); err != nil {
			return nil, err
		}
	}
	return s.serverFor(ctx, kind.String(), id)
}

// LookupKey returns the node that serves a partition key.
func (s *Service) LookupKey(ctx context.Context, req *hstreampb.LookupKeyRequest) (*hstreampb.ServerNode, error) {
	return unary(ctx, s, "LookupKey", req, s.lookupKey)
}

func (s *Service) lookupKey(ctx context.Context, req *hstreampb.LookupKeyRequest) (*hstreampb.ServerNode, error) {
	return s.serverFor(ctx, "key", req.GetPartitionKey())
}

// LookupShardReader returns the node that serves a shard reader. The reader
// need not exist yet: clients look up a fresh id before they create it.
func (s *Service) LookupShardReader(ctx context.Context, req *hstreampb.LookupShardReaderRequest) (*hstreampb.LookupShardReaderResponse, error) {
	return unary(ctx, s, "LookupShardReader", req, s.lookupShardReader)
}

func (s *Service) lookupShardReader(ctx context.Context, req *hstreampb.LookupShardReaderRequest) (*hstreampb.LookupShardReaderResponse, error) {
	sn, err := s.serverFor(ctx, hstreampb.ResourceType_ResShardReader.String(), req.GetReaderId())
	if err != nil {
		return nil, err
	}
	return &hstreampb.LookupShardReaderResponse{ReaderId: req.GetReaderId(), ServerNode: sn}, nil
}

// LookupSubscription returns the node that will own a subscription.
func (s *Service) LookupSubscription(ctx context.Context, req *hstreampb.LookupSubscriptionRequest) (*hstreampb.LookupSubscriptionResponse, error) {
	return unary(ctx, s, "LookupSubscription", req, s.lookupSubscription)
}

func (s *Service) lookupSubscription(ctx context.Context, req *hstreampb.LookupSubscriptionRequest) (*hstreampb.LookupSubscriptionResponse, error) {
	sn, err := s.serverFor(ctx, hstreampb.ResourceType_ResSubscription.String(), req.GetSubscriptionId())
	if err != nil {
		return nil, err
	}
	return &hstreampb.LookupSubscriptionResponse{SubscriptionId: req.GetSubscriptionId(), ServerNode: sn}, nil
}
