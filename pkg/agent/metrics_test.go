package agent

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/client-go/kubernetes/fake"
)

// TestHealthHandlerRoutes: /healthz answers GET (and HEAD) by the probe loop's health,
// /metrics serves the registry, other methods on /healthz get 405 with Allow, other paths 404.
func TestHealthHandlerRoutes(t *testing.T) {
	a, err := New(Options{Node: "n", Initiator: initiator, Leases: fake.NewClientset().CoordinationV1().Leases(testNS),
		Backstores: []Backstore{{Server: "h:1", Portals: []string{"10.0.0.1:3260"}}}, Log: quietLog()})
	require.NoError(t, err)
	m := NewMetrics()
	h := HealthHandler(a, m)

	tests := []struct {
		name    string
		healthy bool
		method  string
		path    string
		code    int
		body    string
	}{
		{name: "no probe round yet", method: http.MethodGet, path: "/healthz", code: http.StatusServiceUnavailable, body: "no probe round"},
		{name: "healthy", healthy: true, method: http.MethodGet, path: "/healthz", code: http.StatusOK, body: "ok"},
		{name: "HEAD", healthy: true, method: http.MethodHead, path: "/healthz", code: http.StatusOK},
		{name: "metrics", method: http.MethodGet, path: "/metrics", code: http.StatusOK, body: "go_goroutines"},
		{name: "POST health", method: http.MethodPost, path: "/healthz", code: http.StatusMethodNotAllowed},
		{name: "unknown path", method: http.MethodGet, path: "/readyz", code: http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a.lastRound.Store(0)
			if tt.healthy {
				a.lastRound.Store(time.Now().UnixNano())
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, nil))
			assert.Equal(t, tt.code, rec.Code)
			assert.True(t, strings.Contains(rec.Body.String(), tt.body), "body %q lacks %q", rec.Body.String(), tt.body)
			if tt.code == http.StatusMethodNotAllowed {
				assert.Contains(t, rec.Header().Get("Allow"), http.MethodGet)
			}
		})
	}
}
