package extender

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"
)

// TestLogLinesNameThePod: the lines logged while answering a request carry the pod being
// scheduled as namespace/name, from the request-scoped logger.
func TestLogLinesNameThePod(t *testing.T) {
	src, pod, names := benchState(t, 3)
	var buf bytes.Buffer
	h := NewHandler(src, HandlerOptions{Log: slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), Metrics: NewMetrics()})
	for _, tc := range []struct {
		name, path string
		body       []byte
		msg        string
	}{
		{"filter", FilterPath, mustJSON(t, extenderv1.ExtenderArgs{Pod: pod, NodeNames: &names}), "filtered nodes"},
		{"prioritize without nodes", PrioritizePath, mustJSON(t, extenderv1.ExtenderArgs{Pod: pod}), "rejected extender request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			buf.Reset()
			rec := post(t, h, tc.path, tc.body)
			require.NotEqual(t, http.StatusInternalServerError, rec.Code)
			lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
			require.NotEmpty(t, lines[0], "nothing logged")
			for _, l := range lines {
				var m map[string]any
				require.NoError(t, json.Unmarshal([]byte(l), &m), l)
				assert.Equal(t, pod.Namespace+"/"+pod.Name, m["pod"], l)
			}
			assert.Contains(t, buf.String(), tc.msg)
		})
	}
}

// TestFilterLogNamesTheFailedNodes: the answer's messages name no node (so that the
// scheduler's event aggregates), so the log line of a decision that leaves the pod nowhere
// to go carries the nodes and their report ages instead.
func TestFilterLogNamesTheFailedNodes(t *testing.T) {
	src, pod, names := benchState(t, 100)
	var buf bytes.Buffer
	h := NewHandler(src, HandlerOptions{Log: slog.New(slog.NewJSONHandler(&buf, nil)), Metrics: NewMetrics()})
	// Only nodes that fail: every 20th refuses a portal, every 50th is stale, every 100th has no report.
	failing := []string{names[19], names[39], names[49], names[99]}
	rec := post(t, h, FilterPath, mustJSON(t, extenderv1.ExtenderArgs{Pod: pod, NodeNames: &failing}))
	require.Equal(t, http.StatusOK, rec.Code)
	var line map[string]any
	require.NoError(t, json.Unmarshal(bytes.TrimSpace(buf.Bytes()), &line), buf.String())
	assert.Equal(t, "filtered nodes", line["msg"])
	assert.Equal(t, "INFO", line["level"], "no node passes: logged at Info")
	fresh := ` \(report \d+ms old\)`
	assert.Regexp(t, "^"+regexp.QuoteMeta("0/4 nodes pass; 2 × cannot reach portal 10.1.1.6:3260 of backstore 172.16.0.10:7717 (connection refused): "+names[19])+fresh+", "+regexp.QuoteMeta(names[39])+fresh+
		regexp.QuoteMeta("; 1 × reachability report is stale (no renewal seen within its 2m0s validity); is the petfabric node agent running?: "+names[49]+" (report 1h0m0s old)"+
			"; 1 × no reachability report from the petfabric node agent (no petfabric-node-<node> Lease): "+names[99])+"$",
		line["summary"])
}
