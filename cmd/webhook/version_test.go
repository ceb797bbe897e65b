package main

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/petfabric/petfabric/internal/versiontest"
)

// The binary, stamped at link time as a release build is, prints its version.
func TestBinaryPrintsVersion(t *testing.T) {
	versiontest.RequirePrintsVersion(t, "webhook", []string{"--version"}, []string{"--version", "--listen=:1"})
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
