package flex

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMainReplies(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "flex.json")
	require.NoError(t, os.WriteFile(cfg, []byte(`{"nodeName":"n","logFile":"`+filepath.Join(dir, "flex.log")+`","stateDir":"`+filepath.Join(dir, "s")+`"}`), 0o644))
	t.Setenv(EnvConfig, cfg)
	tests := []struct {
		verb   string
		args   []string
		status string
		code   int
	}{
		{"init", nil, StatusSuccess, 0},
		{"getvolumename", []string{"{}"}, StatusNotSupported, 0},
		{"isattached", []string{"{}", "node"}, StatusNotSupported, 0},
		{"mount", []string{"/x"}, StatusFailure, 1},
		{"mount", []string{"/x", `{"volumeID":"../x"}`}, StatusFailure, 1},
		{"unmount", []string{"rel"}, StatusFailure, 1},
	}
	for _, tc := range tests {
		var out bytes.Buffer
		code := Main(tc.verb, tc.args, &out, MainOptions{})
		var r Reply
		require.NoError(t, json.Unmarshal(out.Bytes(), &r), tc.verb)
		assert.Equal(t, tc.status, r.Status, tc.verb)
		assert.Equal(t, tc.code, code, tc.verb)
	}

	// A bad node config still lets init succeed (kubelet would drop the driver otherwise), but
	// mounts fail with the reason.
	require.NoError(t, os.WriteFile(cfg, []byte(`{"multipath":"sometimes","logFile":"`+filepath.Join(dir, "flex.log")+`"}`), 0o644))
	var out bytes.Buffer
	assert.Equal(t, 0, Main("init", nil, &out, MainOptions{}))
	out.Reset()
	assert.Equal(t, 1, Main("unmount", []string{"/x"}, &out, MainOptions{}))
	assert.Contains(t, out.String(), "node configuration")
	assert.Contains(t, out.String(), "multipath")

	// A panic becomes a Failure reply, not a stack trace on stdout.
	require.NoError(t, os.WriteFile(cfg, []byte(`{"nodeName":"n","logFile":"`+filepath.Join(dir, "flex.log")+`"}`), 0o644))
	out.Reset()
	code := Main("unmount", []string{"/x"}, &out, MainOptions{NewDriver: func(*NodeConfig, *slog.Logger) (*Driver, error) { panic("boom") }})
	assert.Equal(t, 1, code)
	assert.Contains(t, out.String(), `"status":"Failure"`)
	assert.Contains(t, out.String(), "internal error")
}
