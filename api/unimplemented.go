package api

import (
	"context"

	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/weir-log/weir/api/hstreampb"
)

// What weir does not offer, and what to use instead. Every such RPC is
// overridden here, so its status names weir and the alternative rather than
// carrying the generated "method X not implemented".
type feature struct{ what, instead string }

var (
	sqlQueries    = feature{"SQL queries", "weir is a stream store; consume streams with subscriptions or readers"}
	schemas       = feature{"schemas", "weir stores record payloads as opaque bytes"}
	connectors    = feature{"connectors", "weir is a stream store; bridge MQTT brokers with weir's bridge, or run connectors outside weir"}
	views         = feature{"views", "weir is a stream store; consume streams with subscriptions or readers"}
	keyReaders    = feature{"reading by key", "read the key's shard (ListShards and the key's hash) with ReadShardStream and filter by key"}
	stats         = feature{"HStreamDB statistics", "scrape weir's Prometheus metrics"}
	adminCommands = feature{"admin commands", "use the weir command line"}
)

// notOffered is the status of an RPC weir does not offer.
func (s *Service) notOffered(rpc string, f feature) error {
	return statusError(s.log, rpc, errorf(errNotOffered, "weir does not offer %s (%s): %s", f.what, rpc, f.instead))
}

func (s *Service) ExecuteQuery(context.Context, *hstreampb.CommandQuery) (*hstreampb.CommandQueryResponse, error) {
	return nil, s.notOffered("ExecuteQuery", sqlQueries)
}
func (s *Service) CreateQuery(context.Context, *hstreampb.CreateQueryRequest) (*hstreampb.Query, error) {
	return nil, s.notOffered("CreateQuery", sqlQueries)
}
func (s *Service) CreateQueryWithNamespace(context.Context, *hstreampb.CreateQueryWithNamespaceRequest) (*hstreampb.Query, error) {
	return nil, s.notOffered("CreateQueryWithNamespace", sqlQueries)
}
func (s *Service) ListQueries(context.Context, *hstreampb.ListQueriesRequest) (*hstreampb.ListQueriesResponse, error) {
	return nil, s.notOffered("ListQueries", sqlQueries)
}
func (s *Service) GetQuery(context.Context, *hstreampb.GetQueryRequest) (*hstreampb.Query, error) {
	return nil, s.notOffered("GetQuery", sqlQueries)
}
func (s *Service) TerminateQuery(context.Context, *hstreampb.TerminateQueryRequest) (*emptypb.Empty, error) {
	return nil, s.notOffered("TerminateQuery", sqlQueries)
}
func (s *Service) DeleteQuery(context.Context, *hstreampb.DeleteQueryRequest) (*emptypb.Empty, error) {
	return nil, s.notOffered("DeleteQuery", sqlQueries)
}
func (s *Service) ResumeQuery(context.Context, *hstreampb.ResumeQueryRequest) (*emptypb.Empty, error) {
	return nil, s.notOffered("ResumeQuery", sqlQueries)
}
func (s *Service) PauseQuery(context.Context, *hstreampb.PauseQueryRequest) (*emptypb.Empty, error) {
	return nil, s.notOffered("PauseQuery", sqlQueries)
}
func (s *Service) ParseSql(context.Context, *hstreampb.ParseSqlRequest) (*hstreampb.ParseSqlResponse, error) {
	return nil, s.notOffered("ParseSql", sqlQueries)
}

func (s *Service) RegisterSchema(context.Context, *hstreampb.Schema) (*emptypb.Empty, error) {
	return nil, s.notOffered("RegisterSchema", schemas)
}
func (s *Service) GetSchema(context.Context, *hstreampb.GetSchemaRequest) (*hstreampb.Schema, error) {
	return nil, s.notOffered("GetSchema", schemas)
}
func (s *Service) UnregisterSchema(context.Context, *hstreampb.UnregisterSchemaRequest) (*emptypb.Empty, error) {
	return nil, s.notOffered("UnregisterSchema", schemas)
}

func (s *Service) CreateConnector(context.Context, *hstreampb.CreateConnectorRequest) (*hstreampb.Connector, error) {
	return nil, s.notOffered("CreateConnector", connectors)
}
func (s *Service) ListConnectors(context.Context, *hstreampb.ListConnectorsRequest) (*hstreampb.ListConnectorsResponse, error) {
	return nil, s.notOffered("ListConnectors", connectors)
}
func (s *Service) GetConnector(context.Context, *hstreampb.GetConnectorRequest) (*hstreampb.Connector, error) {
	return nil, s.notOffered("GetConnector", connectors)
}
func (s *Service) GetConnectorSpec(context.Context, *hstreampb.GetConnectorSpecRequest) (*hstreampb.GetConnectorSpecResponse, error) {
	return nil, s.notOffered("GetConnectorSpec", connectors)
}
func (s *Service) GetConnectorLogs(context.Context, *hstreampb.GetConnectorLogsRequest) (*hstreampb.GetConnectorLogsResponse, error) {
	return nil, s.notOffered("GetConnectorLogs", connectors)
}
func (s *Service) DeleteConnector(context.Context, *hstreampb.DeleteConnectorRequest) (*emptypb.Empty, error) {
	return nil, s.notOffered("DeleteConnector", connectors)
}
func (s *Service) PauseConnector(context.Context, *hstreampb.PauseConnectorRequest) (*emptypb.Empty, error) {
	return nil, s.notOffered("PauseConnector", connectors)
}
func (s *Service) ResumeConnector(context.Context, *hstreampb.ResumeConnectorRequest) (*emptypb.Empty, error) {
	return nil, s.notOffered("ResumeConnector", connectors)
}
func (s *Service) AlterConnectorConfig(context.Context, *hstreampb.AlterConnectorConfigRequest) (*emptypb.Empty, error) {
	return nil, s.notOffered("AlterConnectorConfig", connectors)
}

func (s *Service) ListViews(context.Context, *hstreampb.ListViewsRequest) (*hstreampb.ListViewsResponse, error) {
	return nil, s.notOffered("ListViews", views)
}
func (s *Service) GetView(context.Context, *hstreampb.GetViewRequest) (*hstreampb.View, error) {
	return nil, s.notOffered("GetView", views)
}
func (s *Service) DeleteView(context.Context, *hstreampb.DeleteViewRequest) (*emptypb.Empty, error) {
	return nil, s.notOffered("DeleteView", views)
}
func (s *Service) ExecuteViewQuery(context.Context, *hstreampb.ExecuteViewQueryRequest) (*hstreampb.ExecuteViewQueryResponse, error) {
	return nil, s.notOffered("ExecuteViewQuery", views)
}
func (s *Service) ExecuteViewQueryWithNamespace(context.Context, *hstreampb.ExecuteViewQueryWithNamespaceRequest) (*hstreampb.ExecuteViewQueryResponse, error) {
	return nil, s.notOffered("ExecuteViewQueryWithNamespace", views)
}

func (s *Service) ReadStreamByKey(hstreampb.HStreamApi_ReadStreamByKeyServer) error {
	return s.notOffered("ReadStreamByKey", keyReaders)
}

func (s *Service) PerStreamTimeSeriesStats(context.Context, *hstreampb.PerStreamTimeSeriesStatsRequest) (*hstreampb.PerStreamTimeSeriesStatsResponse, error) {
	return nil, s.notOffered("PerStreamTimeSeriesStats", stats)
}
func (s *Service) PerStreamTimeSeriesStatsAll(context.Context, *hstreampb.PerStreamTimeSeriesStatsAllRequest) (*hstreampb.PerStreamTimeSeriesStatsAllResponse, error) {
	return nil, s.notOffered("PerStreamTimeSeriesStatsAll", stats)
}
func (s *Service) GetStats(context.Context, *hstreampb.GetStatsRequest) (*hstreampb.GetStatsResponse, error) {
	return nil, s.notOffered("GetStats", stats)
}

func (s *Service) SendAdminCommand(context.Context, *hstreampb.AdminCommandRequest) (*hstreampb.AdminCommandResponse, error) {
	return nil, s.notOffered("SendAdminCommand", adminCommands)
}
