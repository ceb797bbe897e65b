package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/petfabric/petfabric/internal/checktest"
	"github.com/petfabric/petfabric/pkg/serving"
)

// checkRun runs the built binary (TestMain's driverBin) and returns its exit status and output.
func checkRun(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(driverBin, args...)
	cmd.Env = append(os.Environ(), "NODE_NAME=", "POD_NAMESPACE=")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), string(out)
	}
	require.NoError(t, err)
	return 0, string(out)
}

func writeCheckFile(t *testing.T, dir, name, data string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	require.NoError(t, os.WriteFile(p, []byte(data), 0o600))
	return p
}

// TestAgentCheckMode: `flex agent --check` accepts a complete, valid flag set without
// contacting anything, and refuses each kind of bad flag set with exit status 2 and a message
// naming the problem.
func TestAgentCheckMode(t *testing.T) {
	f := checktest.New(t)
	dir := t.TempDir()
	user := writeCheckFile(t, dir, "username", "discovery\n")
	pass := writeCheckFile(t, dir, "password", "secret\n")
	empty := writeCheckFile(t, dir, "empty", "")
	backstores := writeCheckFile(t, dir, "backstores.yaml", `backstores:
  "172.16.0.10:7717":
    portals: ["10.1.1.5:3260", "10.1.1.6"]
    discoveryCHAP: {usernameFile: `+user+`, passwordFile: `+pass+`}
`)
	noPortals := writeCheckFile(t, dir, "noportals.yaml", "backstores:\n  \"172.16.0.10:7717\": {portals: []}\n")
	missingCHAP := writeCheckFile(t, dir, "missingchap.yaml", "backstores:\n  \"172.16.0.10:7717\":\n    portals: [10.1.1.5]\n    discoveryCHAP: {usernameFile: "+f.Missing+", passwordFile: "+pass+"}\n")
	emptyCHAP := writeCheckFile(t, dir, "emptychap.yaml", "backstores:\n  \"172.16.0.10:7717\":\n    portals: [10.1.1.5]\n    discoveryCHAP: {usernameFile: "+user+", passwordFile: "+empty+"}\n")
	initiator := writeCheckFile(t, dir, "initiatorname.iscsi", "InitiatorName=iqn.1994-05.com.redhat:node1\n")
	noIQN := writeCheckFile(t, dir, "noiqn", "# nothing here\n")
	valid := map[string]string{
		"--node": "node1", "--namespace": "petfabric", "--backstores": backstores,
		"--initiator-file": initiator, "--kubeconfig": f.Kubeconfig,
	}
	args := func(over map[string]string, extra ...string) []string {
		return checktest.Args([]string{"agent", "--check"}, valid, over, extra...)
	}
	code, out := checkRun(t, args(nil)...)
	require.Equal(t, 0, code, "a valid flag set: %s", out)
	require.Contains(t, out, "check passed")
	code, out = checkRun(t, args(map[string]string{"--kubeconfig": ""}, "--metrics-listen=")...)
	require.Equal(t, 0, code, "in-cluster configuration, no metrics listener: %s", out)

	for _, tc := range []struct {
		name  string
		over  map[string]string
		extra []string
		want  string
	}{
		{"unknown flag", nil, []string{"--no-such-flag=1"}, "flag provided but not defined: -no-such-flag"},
		{"unparsable value", nil, []string{"--interval=often"}, `invalid value "often" for flag -interval`},
		{"value out of range", nil, []string{"--kube-api-qps=0"}, "--kube-api-qps 0: must be positive"},
		{"TTL below a second", nil, []string{"--ttl=500ms"}, "TTL 500ms is below the Lease's one-second resolution"},
		{"bad log level", nil, []string{"--log-level=loud"}, "--log-level"},
		{"no node", map[string]string{"--node": ""}, nil, "--node (or $NODE_NAME) is required"},
		{"no backstores flag", map[string]string{"--backstores": ""}, nil, "--backstores is required"},
		{"backstores file missing", map[string]string{"--backstores": f.Missing}, nil, "read backstores file"},
		{"backstores file not YAML", map[string]string{"--backstores": f.BadKubeconfig}, nil, "parse backstores file"},
		{"backstore without portals", map[string]string{"--backstores": noPortals}, nil, "backstore 172.16.0.10:7717: no portals"},
		{"CHAP file missing", map[string]string{"--backstores": missingCHAP}, nil, "discoveryCHAP: read CHAP file"},
		{"CHAP file empty", map[string]string{"--backstores": emptyCHAP}, nil, "CHAP file " + empty + " is empty"},
		{"initiator file missing", map[string]string{"--initiator-file": f.Missing}, nil, "read"},
		{"initiator file without a name", map[string]string{"--initiator-file": noIQN}, nil, "has no InitiatorName= line"},
		{"broken kubeconfig", map[string]string{"--kubeconfig": f.BadKubeconfig}, nil, "--kubeconfig " + f.BadKubeconfig},
		{"bad metrics address", nil, []string{"--metrics-listen=9402"}, `--metrics-listen "9402"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := checkRun(t, args(tc.over, tc.extra...)...)
			require.Equal(t, serving.ExitCheckFailed, code, "exit status of a refused flag set: %s", out)
			require.Contains(t, out, tc.want)
		})
	}
}

// TestInstallCheckMode: `flex install --check` validates the plugin directory and the node
// config it would install, and installs nothing; without --check the config lands atomically
// where the driver reads it.
func TestInstallCheckMode(t *testing.T) {
	dir := t.TempDir()
	plugins := filepath.Join(dir, "plugins")
	good := writeCheckFile(t, dir, "flex.json", `{"nodeName": "node1", "allowedBackstores": ["172.16.0.10:7717"], "multipath": "on"}`)
	unknown := writeCheckFile(t, dir, "unknown.json", `{"nodeName": "node1", "allowedBackstore": ["172.16.0.10:7717"]}`)
	badValue := writeCheckFile(t, dir, "badvalue.json", `{"multipath": "sometimes"}`)
	badPath := writeCheckFile(t, dir, "badpath.json", `{"stateDir": "relative/state"}`)
	dest := filepath.Join(dir, "host-etc", "petfabric", "flex.json")

	code, out := checkRun(t, "install", "--check", "--plugin-dir="+plugins, "--node-config="+good, "--node-config-dest="+dest)
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "check passed")
	require.NoDirExists(t, plugins, "check mode installs nothing")
	require.NoFileExists(t, dest)

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"--plugin-dirs=/x"}, "flag provided but not defined: -plugin-dirs"},
		{"relative plugin dir", []string{"--plugin-dir=plugins"}, `--plugin-dir "plugins" must be absolute`},
		{"relative config destination", []string{"--node-config=" + good, "--node-config-dest=flex.json"}, `--node-config-dest "flex.json" must be absolute`},
		{"missing node config", []string{"--node-config=" + filepath.Join(dir, "none.json")}, "--node-config: node config: open"},
		{"unknown node config field", []string{"--node-config=" + unknown}, `unknown field "allowedBackstore"`},
		{"bad node config value", []string{"--node-config=" + badValue}, `multipath "sometimes": want auto, on or off`},
		{"relative node config path", []string{"--node-config=" + badPath}, `stateDir "relative/state" must be an absolute clean path`},
		{"stray argument", []string{"extra"}, "unexpected arguments"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out := checkRun(t, append([]string{"install", "--check"}, tc.args...)...)
			require.Equal(t, serving.ExitCheckFailed, code, "exit status of a refused flag set: %s", out)
			require.Contains(t, out, tc.want)
		})
	}

	// Without --check: the driver and the node config are installed.
	code, out = checkRun(t, "install", "--plugin-dir="+plugins, "--node-config="+good, "--node-config-dest="+dest)
	require.Equal(t, 0, code, out)
	require.FileExists(t, filepath.Join(plugins, "datera~iscsi", "iscsi"))
	got, err := os.ReadFile(dest)
	require.NoError(t, err)
	want, err := os.ReadFile(good)
	require.NoError(t, err)
	require.Equal(t, string(want), string(got))
	st, err := os.Stat(dest)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o644), st.Mode().Perm())
	code, out = checkRun(t, "install", "--plugin-dir="+plugins, "--node-config="+badValue, "--node-config-dest="+dest)
	require.Equal(t, serving.ExitCheckFailed, code, "a bad config is refused before anything is installed: %s", out)
	got, err = os.ReadFile(dest)
	require.NoError(t, err)
	require.Equal(t, string(want), string(got), "the installed config is untouched")
}
