package version

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestGet(t *testing.T) {
	info := func(settings ...string) func() (*debug.BuildInfo, bool) {
		return func() (*debug.BuildInfo, bool) {
			bi := &debug.BuildInfo{}
			for i := 0; i+1 < len(settings); i += 2 {
				bi.Settings = append(bi.Settings, debug.BuildSetting{Key: settings[i], Value: settings[i+1]})
			}
			return bi, true
		}
	}
	for _, tc := range []struct {
		name    string
		stamped string
		read    func() (*debug.BuildInfo, bool)
		want    string
	}{
		{"stamped wins", "v1.2.3", info("vcs.revision", "0123456789abcdef"), "v1.2.3"},
		{"clean revision", "", info("vcs.revision", "0123456789abcdef", "vcs.modified", "false"), "devel+0123456789ab"},
		{"dirty revision", "", info("vcs.revision", "0123456789abcdef", "vcs.modified", "true"), "devel+0123456789ab-dirty"},
		{"short revision", "", info("vcs.revision", "abc"), "devel+abc"},
		{"no vcs info", "", info(), "devel"},
		{"no build info", "", func() (*debug.BuildInfo, bool) { return nil, false }, "devel"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			oldV, oldR := Version, readBuildInfo
			t.Cleanup(func() { Version, readBuildInfo = oldV, oldR })
			Version, readBuildInfo = tc.stamped, tc.read
			assert.Equal(t, tc.want, Get())
			assert.Equal(t, "webhook "+tc.want+" ("+runtime.Version()+")", String("webhook"))
		})
	}
}

func TestBuildInfoMetric(t *testing.T) {
	old := Version
	t.Cleanup(func() { Version = old })
	Version = "v9.9.9"
	reg := prometheus.NewRegistry()
	require.NoError(t, reg.Register(NewCollector()))
	want := `# HELP petfabric_build_info Always 1; the labels say which petfabric build runs and with which Go toolchain.
# TYPE petfabric_build_info gauge
petfabric_build_info{goversion="` + runtime.Version() + `",version="v9.9.9"} 1
`
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(want), "petfabric_build_info"))
}
