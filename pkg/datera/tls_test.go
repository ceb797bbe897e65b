package datera_test

import (
	"context"
	"encoding/pem"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/petfabric/petfabric/pkg/datera"
	"github.com/petfabric/petfabric/pkg/datera/fake"
)

func TestTLS(t *testing.T) {
	s, err := fake.New(fake.Options{})
	require.NoError(t, err)
	hs := httptest.NewUnstartedServer(s)
	hs.Config.ErrorLog = log.New(io.Discard, "", 0) // the untrusted case makes handshake noise
	hs.StartTLS()
	t.Cleanup(hs.Close)
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: hs.Certificate().Raw})
	pool := hs.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs

	tests := []struct {
		name      string
		cfg       func(*datera.Config)
		wantErr   string
		wantCalls int // requests that reached the API
	}{
		{"trusted via CACertPEM", func(c *datera.Config) { c.CACertPEM = caPEM }, "", 2},
		{"trusted via RootCAs", func(c *datera.Config) { c.RootCAs = pool }, "", 2},
		{"untrusted: verification fails and is not retried", func(*datera.Config) {}, "certificate", 0},
		{"explicit InsecureSkipVerify", func(c *datera.Config) { c.InsecureSkipVerify = true }, "", 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs syncBuffer
			cfg := datera.Config{Endpoint: hs.URL, Username: "admin", Password: "password",
				Retry: fastRetry, Logger: debugLogger(&logs)}
			tt.cfg(&cfg)
			c, err := datera.New(cfg)
			require.NoError(t, err)
			s.ResetRequests()
			_, err = c.GetAppInstance(context.Background(), "pvc-tls")
			if tt.wantErr == "" {
				require.ErrorIs(t, err, datera.ErrNotFound, "the exchange worked; the volume just does not exist")
			} else {
				require.ErrorContains(t, err, tt.wantErr)
				assert.Equal(t, 1, strings.Count(logs.String(), `"msg":"datera request"`), "one attempt, no retry")
			}
			assert.Equal(t, tt.wantCalls, s.Requests(fake.AllRoutes))
		})
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name    string
		cfg     datera.Config
		wantErr string
	}{
		{"no scheme", datera.Config{Endpoint: "127.0.0.1:7718", Username: "u", Password: "p"}, "http:// or https://"},
		{"ftp", datera.Config{Endpoint: "ftp://127.0.0.1", Username: "u", Password: "p"}, "http:// or https://"},
		{"no host", datera.Config{Endpoint: "https://", Username: "u", Password: "p"}, "no host"},
		{"no user", datera.Config{Endpoint: "https://127.0.0.1:7718", Password: "p"}, "username and password"},
		{"no password", datera.Config{Endpoint: "https://127.0.0.1:7718", Username: "u"}, "username and password"},
		{"bad CA PEM", datera.Config{Endpoint: "https://127.0.0.1:7718", Username: "u", Password: "p", CACertPEM: []byte("nope")}, "no PEM certificate"},
		{"TLS options with own HTTP client", datera.Config{Endpoint: "https://127.0.0.1:7718", Username: "u", Password: "p",
			HTTPClient: &http.Client{}, InsecureSkipVerify: true}, "caller-provided HTTPClient"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := datera.New(tt.cfg)
			require.ErrorContains(t, err, tt.wantErr)
		})
	}
}

func TestOwnHTTPClient(t *testing.T) {
	s := newSim(t, fake.Options{})
	calls := 0
	hc := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		calls++
		return http.DefaultTransport.RoundTrip(r)
	})}
	c := newClient(t, s, func(cfg *datera.Config) { cfg.HTTPClient = hc })
	_, err := c.CreateAppInstance(context.Background(), vol("pvc-own-client", 1))
	require.NoError(t, err)
	assert.Equal(t, 3, calls, "login, probe, create all went through the given client")
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
