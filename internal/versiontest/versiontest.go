// Package versiontest checks that a program, stamped at link time as a release build is, prints
// its version. The three programs' tests share it.
package versiontest

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"
)

// Stamp is the version the test links into the binary.
const Stamp = "v0.0.0-stamped"

// RequirePrintsVersion builds the main package in the current directory as program with
// pkg/version.Version stamped, runs it with each argument list, and requires the one line
// "<program> <version> (<go version>)".
func RequirePrintsVersion(t *testing.T, program string, argLists ...[]string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), program)
	out, err := exec.Command("go", "build", "-ldflags", "-X github.com/petfabric/petfabric/pkg/version.Version="+Stamp, "-o", bin, ".").CombinedOutput()
	require.NoError(t, err, "%s", out)
	for _, args := range argLists {
		out, err := exec.Command(bin, args...).CombinedOutput()
		require.NoError(t, err, "%s", out)
		require.Equal(t, program+" "+Stamp+" ("+runtime.Version()+")\n", string(out), "%v", args)
	}
}
