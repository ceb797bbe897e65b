package main

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/petfabric/petfabric/internal/checktest"
	"github.com/petfabric/petfabric/pkg/serving"
)

// TestCheckMode: --check accepts a complete, valid flag set without contacting anything, and
// refuses each kind of bad flag set with exit status 2 and a message naming the problem.
func TestCheckMode(t *testing.T) {
	f := checktest.New(t)
	valid := map[string]string{
		"--tls-cert-file": f.Cert, "--tls-key-file": f.Key, "--client-ca-file": f.CA,
		"--kubeconfig": f.Kubeconfig, "--namespace": "petfabric", "--portal-policy": "any",
	}
	args := func(over map[string]string, extra ...string) []string {
		return checktest.Args([]string{"--check"}, valid, over, extra...)
	}
	require.NoError(t, run(args(nil)), "a valid flag set")
	require.NoError(t, run(args(map[string]string{"--kubeconfig": "", "--client-ca-file": ""})), "in-cluster configuration, no client certificates")

	for _, tc := range []struct {
		name  string
		over  map[string]string
		extra []string
		want  string
	}{
		{"unknown flag", nil, []string{"--no-such-flag=1"}, "flag provided but not defined: -no-such-flag"},
		{"unparsable value", nil, []string{"--max-report-ttl=soon"}, `invalid value "soon" for flag -max-report-ttl`},
		{"value out of range", nil, []string{"--kube-api-burst=0"}, "--kube-api-burst 0: must be at least 1"},
		{"timeout out of range", nil, []string{"--read-timeout=-1s"}, "--read-timeout -1s: must be positive"},
		{"bad log level", nil, []string{"--log-level=loud"}, `--log-level "loud"`},
		{"bad portal policy", map[string]string{"--portal-policy": "most"}, nil, "--portal-policy"},
		{"no namespace", map[string]string{"--namespace": ""}, nil, "--namespace (or $POD_NAMESPACE) is required"},
		{"bad health address", nil, []string{"--health-listen=localhost"}, `--health-listen "localhost"`},
		{"missing key", map[string]string{"--tls-key-file": f.Missing}, nil, "read TLS file"},
		{"key of another pair", map[string]string{"--tls-key-file": f.OtherKey}, nil, "load TLS key pair"},
		{"client CA not PEM", map[string]string{"--client-ca-file": f.NotPEM}, nil, "holds no PEM certificate"},
		{"broken kubeconfig", map[string]string{"--kubeconfig": f.BadKubeconfig}, nil, "--kubeconfig " + f.BadKubeconfig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := run(args(tc.over, tc.extra...))
			require.ErrorContains(t, err, tc.want)
			require.Equal(t, serving.ExitCheckFailed, serving.ExitCode(err), "exit status of a refused flag set")
		})
	}
}
