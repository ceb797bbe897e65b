package placement

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata from what the code writes now")

const reportGolden = "testdata/report.golden.json"

// goldenReport sets every field of the report, so the golden file shows each one's wire name.
func goldenReport() *Report {
	return &Report{
		Version:   ReportVersion,
		Initiator: "iqn.1993-08.org.debian:01:node-a",
		Backstores: map[string]BackstoreReport{
			"datera.example.com:7718": {Portals: map[string]PortalReport{
				"192.0.2.10:3260": {OK: true, RTTMicros: 420},
				"192.0.2.11:3260": {OK: false, Error: "connection refused"},
			}},
		},
		Attached: []string{"pf_default_data-db-0", "pf_default_data-db-1"},
		ProbedAt: time.Date(2026, 11, 30, 11, 0, 0, 0, time.UTC),
	}
}

// TestReportGolden pins the node report's wire format (the Lease annotation the agent writes
// and the extender and reconcile loop read). A change here is a contract change between
// programs upgraded separately: see the version rules at the top of report.go (go test
// -update regenerates the file; review the diff).
func TestReportGolden(t *testing.T) {
	enc, err := goldenReport().Encode()
	require.NoError(t, err)
	var pretty bytes.Buffer
	require.NoError(t, json.Indent(&pretty, []byte(enc), "", "  "))
	pretty.WriteByte('\n')
	if *update {
		require.NoError(t, os.WriteFile(reportGolden, pretty.Bytes(), 0o644))
	}
	want, err := os.ReadFile(reportGolden)
	require.NoError(t, err, "run go test -update to create it")
	assert.Equal(t, string(want), pretty.String(), "the report's wire format changed: a contract change (go test -update, then review)")

	got, err := DecodeReport(string(want))
	require.NoError(t, err, "the reader reads the golden report")
	assert.Equal(t, goldenReport(), got)
}

// TestReportVersions: a reader accepts the versions it knows (the current one, and the one
// before it once there is a newer one) and refuses a newer writer's, saying so.
func TestReportVersions(t *testing.T) {
	for v := oldestReportVersion; v <= ReportVersion; v++ {
		r := goldenReport()
		r.Version = v
		require.NoError(t, r.Validate(), "version %d", v)
	}
	assert.GreaterOrEqual(t, ReportVersion-oldestReportVersion, min(ReportVersion-1, 1), "a reader accepts at least the previous version")
	r := goldenReport()
	r.Version = ReportVersion + 1
	require.ErrorContains(t, r.Validate(), "a newer agent needs a newer reader")
	r.Version = oldestReportVersion - 1
	require.ErrorContains(t, r.Validate(), "unsupported report version")
}
