package main

import (
	"testing"

	"github.com/petfabric/petfabric/internal/versiontest"
)

// The binary, stamped at link time as a release build is, prints its version.
func TestBinaryPrintsVersion(t *testing.T) {
	versiontest.RequirePrintsVersion(t, "extender", []string{"--version"}, []string{"--version", "--listen=:1"})
}
