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

// The webhook takes the serving scaffold's flags, with the extender's names, and checks them
// before it reads a kubeconfig.
func TestServingFlagsChecked(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--read-timeout=0s"}, "--read-timeout 0s: must be positive"},
		{[]string{"--cert-failure-grace=-1s"}, "--cert-failure-grace -1s: must be positive"},
		{[]string{"--cert-reload-interval=0s"}, "--cert-reload-interval 0s: must be positive"},
		{[]string{"--log-level=loud"}, `--log-level "loud"`},
	} {
		t.Run(tc.want, func(t *testing.T) {
			require.ErrorContains(t, run(tc.args), tc.want)
		})
	}
}
