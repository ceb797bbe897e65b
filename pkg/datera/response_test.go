package datera_test

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/petfabric/petfabric/pkg/datera"
)

// A server answering the app_instance GET with a fixed body (login works normally).
func cannedServer(t *testing.T, status int, body string) (string, *atomic.Int32) {
	var gets atomic.Int32
	url := newHTTPServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/login") {
			_, _ = w.Write([]byte(`{"key":"0123456789abcdef0123456789abcdef","version":"v2.2"}`))
			return
		}
		gets.Add(1)
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	}))
	return url, &gets
}

func TestMalformedAndOversizedResponses(t *testing.T) {
	big := `{"data":{"name":"` + strings.Repeat("x", 2048) + `"}}`
	tests := []struct {
		name    string
		status  int
		body    string
		wantErr error
		wantMsg string
	}{
		{"oversized success", 200, big, datera.ErrBadResponse, "exceeds 1024 bytes"},
		{"oversized error", 500, big, datera.ErrBadResponse, "exceeds 1024 bytes"},
		{"not JSON", 200, "<html>hello</html>", datera.ErrBadResponse, "not a JSON object"},
		{"no envelope data", 200, `{"name":"pvc-x"}`, datera.ErrBadResponse, "no data"},
		{"mistyped", 200, `{"data":{"storage_instances":"nope"}}`, datera.ErrBadResponse, "decoding data"},
		{"proxy error page", 502, "<html><body>Bad Gateway</body></html>", nil, "HTTP 502: <html><body>Bad Gateway</body></html>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url, gets := cannedServer(t, tt.status, tt.body)
			c, err := datera.New(datera.Config{Endpoint: url, Username: "admin", Password: "password",
				Retry: fastRetry, MaxResponseBytes: 1024})
			require.NoError(t, err)
			_, err = c.GetAppInstance(context.Background(), "pvc-x")
			require.Error(t, err)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
			}
			assert.ErrorContains(t, err, tt.wantMsg)
			assert.EqualValues(t, 1, gets.Load(), "a bad response is not retried")
		})
	}
}
