package webhook

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admission/v1"
)

// syncBuffer is a bytes.Buffer safe for the handler's concurrent log writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) lines(t *testing.T) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(s.b.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m), l)
		out = append(out, m)
	}
	return out
}

// TestLogLinesNameTheRequest: every log line written while handling a review carries the
// admission UID, the route, the kind and the object's namespace/name, so one request's lines
// can be found (and matched with the apiserver's audit log, which records the UID).
func TestLogLinesNameTheRequest(t *testing.T) {
	var buf syncBuffer
	f := newFixture(t, func(o *Options) { o.Logger = slog.New(slog.NewJSONHandler(&buf, nil)) })
	f.lookup.panicWith = "lookup exploded"
	sts := statefulSet("shop", "web", 2, dateraTemplate("data", "datera-gold", "1Gi"))
	f.lookup.sts["shop/web"] = sts
	pvc := claimOf(sts, 0, 0)
	for _, tc := range []struct {
		route, path, kind, name string
		req                     *admissionv1.AdmissionRequest
	}{
		{"statefulsets", PathStatefulSets, "StatefulSet", "web", stsRequest(t, admissionv1.Create, sts, nil)},
		{"scale", PathScale, "Scale", "web", scaleRequest(t, "shop", "web", 2, 3)},
		{"persistentvolumeclaims", PathClaims, "PersistentVolumeClaim", pvc.Name, claimRequest(t, admissionv1.Create, pvc)},
	} {
		t.Run(tc.route, func(t *testing.T) {
			tc.req.Kind.Kind = tc.kind
			before := len(buf.lines(t))
			f.admit(t, tc.path, tc.req)
			lines := buf.lines(t)[before:]
			require.NotEmpty(t, lines, "the panic is logged")
			for _, l := range lines {
				assert.Equal(t, string(tc.req.UID), l["uid"], "%v", l)
				assert.Equal(t, tc.route, l["route"])
				assert.Equal(t, tc.kind, l["kind"])
				assert.Equal(t, "shop", l["namespace"])
				assert.Equal(t, tc.name, l["name"])
				assert.Equal(t, string(tc.req.Operation), l["operation"])
			}
		})
	}
}
