package webhook

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
)

// TestRoutes: admission paths take POST only (405 naming POST in Allow otherwise); other
// paths, and admission paths with a trailing slash, are 404.
func TestRoutes(t *testing.T) {
	f := newFixture(t)
	tests := []struct {
		method, path string
		code         int
	}{
		{http.MethodGet, PathStatefulSets, http.StatusMethodNotAllowed},
		{http.MethodDelete, PathClaims, http.StatusMethodNotAllowed},
		{http.MethodHead, PathScale, http.StatusMethodNotAllowed},
		{http.MethodGet, PathPods, http.StatusMethodNotAllowed},
		{http.MethodPost, "/mutate/deployments", http.StatusNotFound},
		{http.MethodPost, PathClaims + "/", http.StatusNotFound},
		{http.MethodGet, "/", http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			rec := httptest.NewRecorder()
			f.h.ServeHTTP(rec, httptest.NewRequest(tt.method, tt.path, nil))
			assert.Equal(t, tt.code, rec.Code)
			if tt.code == http.StatusMethodNotAllowed {
				assert.Equal(t, http.MethodPost, rec.Header().Get("Allow"))
			}
		})
	}
}
