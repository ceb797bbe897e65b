// Package testenv decides what a test does when a real part it needs (a binary, root, a
// kernel feature) is missing on this machine.
//
// `make test` sets PETFABRIC_STRICT=1 after installing everything, so there a missing part
// is a test failure, never a silent skip. A developer running `go test` by hand without the
// setup gets a skip that names what is missing and how to get it.
package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// Strict reports whether missing test dependencies must fail tests (set by `make test`).
func Strict() bool { return os.Getenv("PETFABRIC_STRICT") == "1" }

// Missing fails (strict) or skips the test because what is unavailable.
func Missing(t testing.TB, what string) {
	t.Helper()
	if Strict() {
		t.Fatalf("required test dependency missing: %s (make test installs it: hack/setup-apt.sh, hack/build-tools.sh)", what)
	}
	t.Skipf("skipping: %s (run `make test`, which installs it)", what)
}

// LookPath returns the path of a command the test needs, or fails/skips via Missing.
func LookPath(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Missing(t, "command "+name+" not in PATH")
	}
	return p
}

// Root fails/skips unless the test runs as root (loop devices, mount, tgtd).
func Root(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "root privileges")
	}
}
