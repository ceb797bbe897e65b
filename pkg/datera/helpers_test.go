package datera_test

import (
	"bytes"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/petfabric/petfabric/pkg/datera"
	"github.com/petfabric/petfabric/pkg/datera/fake"
)

const (
	testIQN  = "iqn.1993-08.org.debian:01:node-a"
	testIQN2 = "iqn.1993-08.org.debian:01:node-b"
)

// fastRetry keeps tests quick while still exercising real backoff waits.
var fastRetry = datera.Retry{Initial: time.Millisecond, Max: 4 * time.Millisecond, Attempts: 8}

// sim is a simulator served over loopback HTTP.
type sim struct {
	*fake.Server
	http *httptest.Server
}

func newSim(t testing.TB, opts fake.Options) *sim {
	t.Helper()
	s, err := fake.New(opts)
	require.NoError(t, err)
	hs := httptest.NewServer(s)
	t.Cleanup(hs.Close)
	return &sim{Server: s, http: hs}
}

// newHTTPServer serves h on loopback and returns its URL.
func newHTTPServer(t testing.TB, h http.Handler) string {
	t.Helper()
	hs := httptest.NewServer(h)
	t.Cleanup(hs.Close)
	return hs.URL
}

// newClient returns a client of s with fast retries and polling; mods adjust the config.
func newClient(t testing.TB, s *sim, mods ...func(*datera.Config)) *datera.Client {
	t.Helper()
	cfg := datera.Config{
		Endpoint:     s.http.URL,
		Username:     fake.DefaultUser,
		Password:     fake.DefaultPassword,
		Retry:        fastRetry,
		PollInterval: 2 * time.Millisecond,
	}
	for _, m := range mods {
		m(&cfg)
	}
	c, err := datera.New(cfg)
	require.NoError(t, err)
	return c
}

// vol is a valid create request.
func vol(name string, gib int64) datera.CreateVolumeRequest {
	return datera.CreateVolumeRequest{Name: name, SizeGiB: gib, ReplicaCount: 3}
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func debugLogger(w *syncBuffer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// headerRecorder wraps a handler and records request headers per path.
type headerRecorder struct {
	next http.Handler
	mu   sync.Mutex
	seen []http.Header
	urls []string
}

func (h *headerRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	h.seen = append(h.seen, r.Header.Clone())
	h.urls = append(h.urls, r.Method+" "+r.URL.Path)
	h.mu.Unlock()
	h.next.ServeHTTP(w, r)
}
