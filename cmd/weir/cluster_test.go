package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/weir-log/weir/internal/nodetest"
)

func TestClusterCommandListsTheNode(t *testing.T) {
	node := nodetest.Start(t)
	out, err := runWeir(t.Context(), "", "cluster", "--addr", node.Addr)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(out), "\n")
	require.Len(t, lines, 2, "%s", out)
	require.Regexp(t, `^ID\s+ADDRESS\s+STATE\s+VERSION$`, lines[0])
	require.Regexp(t, `^1\s+`+node.Addr+`\s+Running\s`, lines[1])
}
