package datera_test

import (
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/petfabric/petfabric/pkg/datera"
	"github.com/petfabric/petfabric/pkg/datera/fake"
)

// recordingServer answers 200 to everything and remembers every request it got: method,
// path, headers and body. It plays the host a redirect points to.
type recordingServer struct {
	mu   sync.Mutex
	got  []string
	hdrs []http.Header
}

func (s *recordingServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	s.got = append(s.got, fmt.Sprintf("%s %s %s", r.Method, r.URL.Path, body))
	s.hdrs = append(s.hdrs, r.Header.Clone())
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"key":"stolen","data":{}}`)
}

func (s *recordingServer) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.got...)
}

// TestClientRefusesRedirectsAndSendsNothingToTheirTarget is the attack: the configured
// Datera endpoint (server 1, HTTPS) answers with a redirect to another host (server 2,
// plain HTTP). Following it would re-send the login body (username and password) or the
// Auth-Token header to server 2. The client must refuse every redirect status, send
// nothing to server 2, not retry the redirect as a transient failure, and say which
// status and Location it refused — with its own transport and with a caller's HTTPClient,
// whose redirect policy it must leave untouched.
func TestClientRefusesRedirectsAndSendsNothingToTheirTarget(t *testing.T) {
	for _, status := range []int{http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
		http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		for _, own := range []bool{false, true} {
			for _, what := range []string{"login", "authenticated call"} {
				name := fmt.Sprintf("%d/%s/callerHTTPClient=%v", status, what, own)
				t.Run(name, func(t *testing.T) {
					thief := &recordingServer{}
					s2 := httptest.NewServer(thief) // https→http downgrade on top of the host change
					t.Cleanup(s2.Close)

					sim, err := fake.New(fake.Options{})
					require.NoError(t, err)
					var (
						mu     sync.Mutex
						served []string
					)
					s1 := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
						mu.Lock()
						served = append(served, r.Method+" "+r.URL.Path)
						mu.Unlock()
						if what == "authenticated call" && strings.HasSuffix(r.URL.Path, "/login") {
							sim.ServeHTTP(w, r) // a real session, so the next call carries Auth-Token
							return
						}
						http.Redirect(w, r, s2.URL+r.URL.Path, status)
					}))
					t.Cleanup(s1.Close)

					cfg := datera.Config{Endpoint: s1.URL, Username: fake.DefaultUser, Password: fake.DefaultPassword, Retry: fastRetry}
					var callers *http.Client
					if own {
						callers = s1.Client()
						cfg.HTTPClient = callers
					} else {
						cfg.CACertPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s1.Certificate().Raw})
					}
					c, err := datera.New(cfg)
					require.NoError(t, err)

					ctx := context.Background()
					if what == "login" {
						err = c.Login(ctx)
					} else {
						_, err = c.GetAppInstance(ctx, "pvc-victim")
					}
					assert.Empty(t, thief.requests(), "the redirect target received a request (token or password sent to another host)")
					thief.mu.Lock()
					for _, h := range thief.hdrs {
						assert.Empty(t, h.Get("Auth-Token"), "Auth-Token sent to the redirect target")
					}
					thief.mu.Unlock()
					require.Error(t, err)
					t.Logf("refused: %v", err)
					assert.ErrorIs(t, err, datera.ErrRedirect)
					assert.Contains(t, err.Error(), fmt.Sprintf("HTTP %d", status), "the error names the status")
					assert.Contains(t, err.Error(), s2.URL, "the error names the Location")
					mu.Lock()
					defer mu.Unlock()
					want := 1 // the redirected request, once: a redirect is not transient
					if what == "authenticated call" {
						want = 2 // login, then the redirected call
					}
					assert.Len(t, served, want, "requests to server 1: %v", served)
					if own {
						assert.Nil(t, callers.CheckRedirect, "the caller's HTTPClient was modified")
					}
				})
			}
		}
	}
}
