package main

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

// The binary, stamped at link time as a release build is, prints its version.
func TestBinaryPrintsVersion(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "flex")
	out, err := exec.Command("go", "build", "-ldflags", "-X github.com/petfabric/petfabric/pkg/version.Version=v0.0.0-stamped", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "%s", out)
	for _, args := range [][]string{{"--version"}, {"version"}} {
		out, err := exec.Command(bin, args...).CombinedOutput()
		require.NoError(t, err, "%s", out)
		require.Equal(t, "flex v0.0.0-stamped ("+runtime.Version()+")\n", string(out), "%v", args)
	}
}

// The agent exports which build it is, as the webhook and the extender do.
func TestAgentMetricsCarryBuildInfo(t *testing.T) {
	n, err := testutil.GatherAndCount(agentMetrics().Registry, "petfabric_build_info")
	require.NoError(t, err)
	require.Equal(t, 1, n)
}
