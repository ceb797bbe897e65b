package main

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

// The binary, stamped at link time as a release build is, prints its version.
func TestBinaryPrintsVersion(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "webhook")
	out, err := exec.Command("go", "build", "-ldflags", "-X github.com/petfabric/petfabric/pkg/version.Version=v0.0.0-stamped", "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "%s", out)
	for _, args := range [][]string{{"--version"}, {"--version", "--listen=:1"}} {
		out, err := exec.Command(bin, args...).CombinedOutput()
		require.NoError(t, err, "%s", out)
		require.Equal(t, "webhook v0.0.0-stamped ("+runtime.Version()+")\n", string(out), "%v", args)
	}
}
