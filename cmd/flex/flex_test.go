package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/petfabric/petfabric/pkg/flex"
	"github.com/petfabric/petfabric/pkg/flex/flextest"
)

// driverBin is this command built once with the loop-device initiator stand-in and the
// crash-injection hooks compiled in (-tags petfabric_standin,petfabric_crash); every test runs it as kubelet does: a new process per call, its
// combined stdout+stderr parsed as one JSON object.
var driverBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "flexbin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	driverBin = filepath.Join(dir, "iscsi")
	if out, err := exec.Command("go", "build", "-tags", "petfabric_standin,petfabric_crash", "-o", driverBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building the driver: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// result is one driver call.
type result struct {
	Reply  flex.Reply
	Code   int
	Raw    string
	Killed bool // ended by SIGKILL (crash injection)
}

// run executes the driver with the given config file and extra environment.
func run(t testing.TB, configFile string, extraEnv []string, args ...string) result {
	t.Helper()
	cmd := exec.Command(driverBin, args...)
	cmd.Env = append(append(os.Environ(), flex.EnvConfig+"="+configFile), extraEnv...)
	out, err := cmd.CombinedOutput()
	r := result{Raw: string(out)}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
			r.Killed = true
			return r
		}
		r.Code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running the driver: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&r.Reply), "output must be one JSON reply: %q", out)
	require.False(t, dec.More(), "output must hold nothing after the reply: %q", out)
	assert.Equal(t, r.Reply.ExitCode(), r.Code, "exit code matches the status: %q", out)
	return r
}

// minimalConfig is a node config that needs no root: for protocol and input checks.
func minimalConfig(t testing.TB) (configFile, logFile string) {
	t.Helper()
	dir := t.TempDir()
	logFile = filepath.Join(dir, "flex.log")
	configFile = filepath.Join(dir, "flex.json")
	cfg := fmt.Sprintf(`{"nodeName":"n","stateDir":%q,"globalMountDir":%q,"logFile":%q,"initiatorNameFile":%q,`+
		`"allowedBackstores":["192.0.2.10:7717"],"allowInsecureHTTP":true}`,
		filepath.Join(dir, "state"), filepath.Join(dir, "global"), logFile, filepath.Join(dir, "initiatorname"))
	require.NoError(t, os.WriteFile(configFile, []byte(cfg), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "initiatorname"), []byte("InitiatorName="+flextest.InitiatorName+"\n"), 0o644))
	return configFile, logFile
}

func TestProtocol(t *testing.T) {
	cfg, logFile := minimalConfig(t)
	r := run(t, cfg, nil, "init")
	assert.Equal(t, `{"status":"Success","capabilities":{"attach":false,"selinuxRelabel":true,"supportsMetrics":true,"fsGroup":true,"requiresFSResize":false}}`+"\n", r.Raw)
	assert.Equal(t, 0, r.Code)

	// Every other verb kubelet or the controller-manager sends, with its real argv shape.
	argv := map[string][]string{
		"attach": {`{"volumeID":"v"}`, "node1"}, "detach": {"pv1", "node1"},
		"waitforattach": {"/dev/x", `{}`}, "isattached": {`{}`, "node1"},
		"mountdevice": {"/var/lib/kubelet/plugins/x", "/dev/x", `{}`}, "unmountdevice": {"/var/lib/kubelet/plugins/x"},
		"getvolumename": {`{}`}, "expandvolume": {`{}`, "/x", "2048", "1024"},
		"expandfs": {`{}`, "/dev/x", "/x", "2048", "1024"}, "getdevicemountpath": {`{}`}, "waitfordetach": {"/dev/x"},
	}
	for _, verb := range flex.UnsupportedVerbs() {
		r := run(t, cfg, nil, append([]string{verb}, argv[verb]...)...)
		assert.Equal(t, flex.StatusNotSupported, r.Reply.Status, verb)
		assert.Equal(t, 0, r.Code, verb)
	}
	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{"mount", "/x"}, "mount takes 2 arguments, got 1"},
		{[]string{"unmount"}, "unmount takes 1 arguments, got 0"},
		{[]string{"unmount", "relative/dir"}, "is not absolute"},
		{[]string{"unmount", "/a/../b"}, "is not clean"},
	} {
		r := run(t, cfg, nil, tc.args...)
		assert.Equal(t, flex.StatusFailure, r.Reply.Status, tc.args)
		assert.Contains(t, r.Reply.Message, tc.msg)
		assert.Equal(t, 1, r.Code)
	}
	log, err := os.ReadFile(logFile)
	require.NoError(t, err)
	assert.Contains(t, string(log), `"msg":"call"`, "calls are logged to the file, not to stdout")

	// A word that is no FlexVolume verb is a usage error of the binary, not JSON.
	out, err := exec.Command(driverBin, "no-such-mode").CombinedOutput()
	require.Error(t, err)
	assert.Contains(t, string(out), "unknown mode")
}

func TestBadInputFailsClearly(t *testing.T) {
	cfg, logFile := minimalConfig(t)
	dir := filepath.Join(t.TempDir(), "pod", "vol")
	good := map[string]string{"volumeID": "pv-1", "size": "1", "backstoreServer": "192.0.2.10:7717",
		"kubernetes.io/secret/username": "YWRtaW4=", "kubernetes.io/secret/password": "c2VjcmV0X3Bhc3N3b3Jk"}
	with := func(kv ...string) string {
		o := map[string]string{}
		for k, v := range good {
			o[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == "" {
				delete(o, kv[i])
			} else {
				o[kv[i]] = kv[i+1]
			}
		}
		b, _ := json.Marshal(o)
		return string(b)
	}
	for _, tc := range []struct {
		name, dir, opts, msg string
	}{
		{"path traversal in volumeID", dir, with("volumeID", "../../etc/passwd"), "is not a valid Datera volume name"},
		{"slash in volumeID", dir, with("volumeID", "a/b/c"), "is not a valid Datera volume name"},
		{"missing volumeID", dir, with("volumeID", ""), "volumeID is required"},
		{"malformed JSON", dir, `{"volumeID": "pv-1",`, "malformed options JSON"},
		{"non-string value", dir, `{"volumeID": "pv-1", "size": 1}`, "malformed options JSON"},
		{"two JSON objects", dir, `{"volumeID":"pv-1"} {}`, "trailing data"},
		{"missing secret", dir, with("kubernetes.io/secret/username", "", "kubernetes.io/secret/password", ""), "no Datera credentials"},
		{"half a secret", dir, with("kubernetes.io/secret/password", ""), "only one of the keys username and password"},
		{"secret not base64", dir, with("kubernetes.io/secret/password", "%%%"), `secret key "password" is not base64`},
		{"size out of range", dir, with("size", "0"), "option size"},
		{"replica out of range", dir, with("replica", "9"), "option replica"},
		{"bad fsType", dir, with("kubernetes.io/fsType", "vfat"), `fsType "vfat" is not supported`},
		{"backstore port without scheme", dir, with("backstoreServer", "192.0.2.10:9999"), "cannot infer http or https"},
		{"relative mount dir", "pods/x", with(), "is not absolute"},
		{"unclean mount dir", dir + "/../x", with(), "is not clean"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := run(t, cfg, nil, "mount", tc.dir, tc.opts)
			assert.Equal(t, flex.StatusFailure, r.Reply.Status)
			assert.Contains(t, r.Reply.Message, tc.msg)
			assert.NotContains(t, r.Reply.Message, "secret_password")
			_, err := os.Stat(dir)
			assert.True(t, os.IsNotExist(err), "nothing was created")
		})
	}
	log, err := os.ReadFile(logFile)
	require.NoError(t, err)
	assert.NotContains(t, string(log), "c2VjcmV0X3Bhc3N3b3Jk", "secret values are redacted in the log")
	assert.NotContains(t, string(log), "secret_password")
}

func TestInstallIsAtomicCopy(t *testing.T) {
	pluginDir := t.TempDir()
	out, err := exec.Command(driverBin, "install", "--plugin-dir", pluginDir).CombinedOutput()
	require.NoError(t, err, "%s", out)
	dst := filepath.Join(pluginDir, "datera~iscsi", "iscsi")
	assert.Equal(t, "installed "+dst+"\n", string(out))
	st, err := os.Stat(dst)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o755), st.Mode().Perm())
	want, _ := os.ReadFile(driverBin)
	got, _ := os.ReadFile(dst)
	assert.True(t, bytes.Equal(want, got), "identical copy")
	entries, _ := os.ReadDir(filepath.Dir(dst))
	require.Len(t, entries, 1, "no temp file left behind")
	// The installed driver answers kubelet.
	cfg, _ := minimalConfig(t)
	cmd := exec.Command(dst, "init")
	cmd.Env = append(os.Environ(), flex.EnvConfig+"="+cfg)
	initOut, err := cmd.CombinedOutput()
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(string(initOut), `{"status":"Success"`))
	// Installing again replaces the file in place.
	out, err = exec.Command(driverBin, "install", "--plugin-dir", pluginDir).CombinedOutput()
	require.NoError(t, err, "%s", out)
	_, err = exec.Command(driverBin, "install", "--plugin-dir", "relative").CombinedOutput()
	require.Error(t, err)
}
