package main

import (
	"bufio"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/petfabric/petfabric/pkg/datera"
)

// startSim runs the command until the test ends and returns the URL it printed.
func startSim(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, args, pw, io.Discard)
		pw.Close()
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err, "clean shutdown")
		case <-time.After(10 * time.Second):
			t.Error("datera-sim did not stop")
		}
	})
	line, err := bufio.NewReader(pr).ReadString('\n')
	require.NoError(t, err)
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	url, ok := strings.CutPrefix(strings.TrimSpace(line), "datera-sim listening on ")
	require.True(t, ok, line)
	return url
}

func TestServesTheSimulator(t *testing.T) {
	tests := []struct {
		name   string
		tls    bool
		scheme string
	}{
		{"http", false, "http://127.0.0.1:"},
		{"https with its own CA", true, "https://127.0.0.1:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			caFile := filepath.Join(t.TempDir(), "ca.pem")
			args := []string{"-listen", "127.0.0.1:0", "-username", "petfabric", "-password", "Sim_password1",
				"-portals", "127.0.0.1:3260", "-tenants", "/root/demo"}
			if tt.tls {
				args = append(args, "-tls", "-ca-out", caFile)
			}
			url := startSim(t, args...)
			require.True(t, strings.HasPrefix(url, tt.scheme), url)
			cfg := datera.Config{Endpoint: url, Username: "petfabric", Password: "Sim_password1", Tenant: "demo"}
			if tt.tls {
				ca, err := os.ReadFile(caFile)
				require.NoError(t, err)
				cfg.CACertPEM = ca
			}
			c, err := datera.New(cfg)
			require.NoError(t, err)
			ctx := context.Background()
			_, err = c.CreateAppInstance(ctx, datera.CreateVolumeRequest{Name: "pvc-sim", SizeGiB: 1})
			require.NoError(t, err)
			_, err = c.SetAdminState(ctx, "pvc-sim", datera.Online, false)
			require.NoError(t, err)
			target, err := c.Access(ctx, "pvc-sim")
			require.NoError(t, err)
			assert.Equal(t, []string{"127.0.0.1:3260"}, target.Portals)
		})
	}
}

func TestRejectsBadFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"all interfaces", []string{"-listen", "0.0.0.0:7717"}, "only 127.0.0.1"},
		{"other host", []string{"-listen", "10.1.2.3:7717"}, "only 127.0.0.1"},
		{"no port", []string{"-listen", "127.0.0.1"}, "missing port"},
		{"bad password", []string{"-listen", "127.0.0.1:0", "-password", "x"}, "login schema"},
		{"bad tenant", []string{"-listen", "127.0.0.1:0", "-tenants", "team"}, "/root/<name>"},
		{"tgtd not running", []string{"-listen", "127.0.0.1:0", "-tgtd-control-port", "31999", "-backing-dir", t.TempDir(), "-tgtadm", "false"}, "tgtd not reachable"},
		{"unknown flag", []string{"-port", "1"}, "flag provided but not defined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run(context.Background(), tt.args, io.Discard, io.Discard)
			require.ErrorContains(t, err, tt.wantErr)
		})
	}
}
