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
		"--datera-ca-file": f.CA, "--kubeconfig": f.Kubeconfig, "--lease-namespace": "petfabric",
		"--cluster-id": "prod_a", "--scheduler-name": "petfabric-scheduler", "--managed-resource": "petfabric.io/datera",
	}
	args := func(over map[string]string, extra ...string) []string {
		return checktest.Args([]string{"--check"}, valid, over, extra...)
	}
	require.NoError(t, run(args(nil)), "a valid flag set")
	require.NoError(t, run(args(map[string]string{"--kubeconfig": "", "--client-ca-file": "", "--datera-ca-file": "", "--cluster-id": "",
		"--scheduler-name": "", "--managed-resource": ""})), "the in-cluster configuration and the optional files left out")
	require.NoError(t, run(args(map[string]string{"--lease-namespace": ""}, "--reconcile=false")), "no lease namespace without the loop")

	for _, tc := range []struct {
		name  string
		over  map[string]string
		extra []string
		want  string
	}{
		{"unknown flag", nil, []string{"--no-such-flag=1"}, "flag provided but not defined: -no-such-flag"},
		{"unparsable value", nil, []string{"--kube-api-qps=fast"}, `invalid value "fast" for flag -kube-api-qps`},
		{"value out of range", nil, []string{"--max-ordinals=0"}, "--max-ordinals 0: want at least 1"},
		{"timeout out of range", nil, []string{"--write-timeout=0s"}, "--write-timeout 0s: must be positive"},
		{"bad log level", nil, []string{"--log-level=loud"}, `--log-level "loud"`},
		{"bad listen address", map[string]string{}, []string{"--listen=8443"}, `--listen "8443"`},
		{"missing certificate", map[string]string{"--tls-cert-file": f.Missing}, nil, "read TLS file"},
		{"key of another pair", map[string]string{"--tls-key-file": f.OtherKey}, nil, "load TLS key pair"},
		{"client CA not PEM", map[string]string{"--client-ca-file": f.NotPEM}, nil, "client CA file " + f.NotPEM + " holds no PEM certificate"},
		{"Datera CA missing", map[string]string{"--datera-ca-file": f.Missing}, nil, "--datera-ca-file: open " + f.Missing},
		{"Datera CA not PEM", map[string]string{"--datera-ca-file": f.NotPEM}, nil, "--datera-ca-file " + f.NotPEM + " holds no PEM certificate"},
		{"broken kubeconfig", map[string]string{"--kubeconfig": f.BadKubeconfig}, nil, "--kubeconfig " + f.BadKubeconfig},
		{"bad cluster id", map[string]string{"--cluster-id": "has space"}, nil, "--cluster-id"},
		{"no lease namespace for the loop", map[string]string{"--lease-namespace": ""}, nil, "--lease-namespace (or $POD_NAMESPACE) is required with --reconcile"},
		{"bad scheduler name", map[string]string{"--scheduler-name": "Petfabric Scheduler"}, nil, `--scheduler-name "Petfabric Scheduler"`},
		{"bad managed resource", map[string]string{"--managed-resource": "datera"}, nil, `--managed-resource "datera": want an extended resource name`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := run(args(tc.over, tc.extra...))
			require.ErrorContains(t, err, tc.want)
			require.Equal(t, serving.ExitCheckFailed, serving.ExitCode(err), "exit status of a refused flag set")
		})
	}
}

// Outside check mode a bad value still fails the start with exit status 1, as before; only a
// flag the parser refuses is a usage error (2).
func TestExitStatusOutsideCheckMode(t *testing.T) {
	err := run([]string{"--max-ordinals=0"})
	require.ErrorContains(t, err, "--max-ordinals 0")
	require.Equal(t, 1, serving.ExitCode(err))
	err = run([]string{"--no-such-flag"})
	require.Equal(t, serving.ExitCheckFailed, serving.ExitCode(err))
	require.NoError(t, run([]string{"-h"}), "help is not an error")
}
