package api

import (
	"context"
	"fmt"
	"math"
	"net"
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
// type ("ResShard", "ResShardReader", "key", …) and id names it. Every
// lookup goes through here. A node that hosts everything answers itself;
// placement-aware routing (and WrongServer redirects) replace this body when
// shards spread over a cluster.
func (s *Service) serverFor(_ context.Context, kind, id string) (*hstreampb.ServerNode, error) {
	sn, err := s.serverNode(s.node.Self())
	if err != nil {
		return nil, fmt.Errorf("lookup of %s %q: %w", kind, id, err)
	}
	return sn, nil
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

// DescribeCluster lists the live nodes; clients replace their server list
// with it.
func (s *Service) DescribeCluster(ctx context.Context, req *emptypb.Empty) (*hstreampb.DescribeClusterResponse, error) {
	return unary(ctx, s, "DescribeCluster", req, s.describeCluster)
}

func (s *Service) describeCluster(ctx context.Context, _ *emptypb.Empty) (*hstreampb.DescribeClusterResponse, error) {
	members, err := s.node.Members(ctx)
	if err != nil {
		return nil, err
	}
	resp := &hstreampb.DescribeClusterResponse{
		ProtocolVersion: protocolVersion,
		ClusterUpTime:   uint64(max(time.Since(s.node.StartedAt()), 0) / time.Second),
	}
	for _, m := range members {
		sn, err := s.serverNode(m)
		if err != nil {
			return nil, err
		}
		resp.ServerNodes = append(resp.ServerNodes, sn)
		resp.ServerNodesStatus = append(resp.ServerNodesStatus,
			&hstreampb.ServerNodeStatus{Node: sn, State: hstreampb.NodeState_Running})
	}
	return resp, nil
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
