package extender

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
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
