// Package checktest holds the files the programs' check-mode tests point their flags at: a
// serving pair and its CA, a second key that does not match, a file that is not PEM, and a
// valid and a broken kubeconfig.
package checktest

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/petfabric/petfabric/internal/testpki"
)

// Files are paths in a test's temp directory.
type Files struct {
	Dir string
	// Cert and Key are a serving pair signed by CA.
	Cert, Key, CA string
	// OtherKey is a key that does not match Cert.
	OtherKey string
	// NotPEM holds text that is not a PEM certificate.
	NotPEM string
	// Kubeconfig is a valid kubeconfig naming an apiserver nobody contacts; BadKubeconfig is
	// not YAML a kubeconfig is made of.
	Kubeconfig, BadKubeconfig string
	// Missing names no file.
	Missing string
}

// New writes the files.
func New(t testing.TB) Files {
	t.Helper()
	dir := t.TempDir()
	ca, err := testpki.NewCA("check-ca")
	require.NoError(t, err)
	pair, err := ca.Serving([]net.IP{net.ParseIP("127.0.0.1")}, "petfabric-webhook.petfabric.svc")
	require.NoError(t, err)
	other, err := ca.Serving(nil, "other")
	require.NoError(t, err)
	f := Files{Dir: dir, Missing: filepath.Join(dir, "missing.pem")}
	f.Cert, f.Key, err = pair.WriteFiles(dir, "tls")
	require.NoError(t, err)
	_, f.OtherKey, err = other.WriteFiles(dir, "other")
	require.NoError(t, err)
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(data), 0o600))
		return p
	}
	f.CA = write("ca.crt", string(ca.CertPEM))
	f.NotPEM = write("not.pem", "this is not a certificate\n")
	f.Kubeconfig = write("kubeconfig", `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: x, context: {cluster: c, user: u}}]
current-context: x
`)
	f.BadKubeconfig = write("bad-kubeconfig", "clusters: {this is: [not a kubeconfig\n")
	return f
}

// Args is a check-mode command line: prefix (the mode and --check), then each flag of valid
// as flag=value, with the values of over in place of valid's (an over value "-" leaves the
// flag out), then extra. Map order is random, as a user's flag order is.
func Args(prefix []string, valid, over map[string]string, extra ...string) []string {
	out := append([]string(nil), prefix...)
	for k, v := range valid {
		if nv, ok := over[k]; ok {
			v = nv
		}
		if v != "-" {
			out = append(out, k+"="+v)
		}
	}
	return append(out, extra...)
}
