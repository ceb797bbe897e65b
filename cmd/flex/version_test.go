package main

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/petfabric/petfabric/internal/versiontest"
)

// The binary, stamped at link time as a release build is, prints its version.
func TestBinaryPrintsVersion(t *testing.T) {
	versiontest.RequirePrintsVersion(t, "flex", []string{"--version"}, []string{"version"})
}

// The agent exports which build it is, as the webhook and the extender do.
func TestAgentMetricsCarryBuildInfo(t *testing.T) {
	n, err := testutil.GatherAndCount(agentMetrics().Registry, "petfabric_build_info")
	require.NoError(t, err)
	require.Equal(t, 1, n)
}
