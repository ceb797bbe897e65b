package serving

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/petfabric/petfabric/internal/testpki"
)

type files struct {
	ca                *testpki.CA
	certFile, keyFile string
	pair              *testpki.Pair
}

func writePair(t *testing.T) files {
	t.Helper()
	ca, err := testpki.NewCA("serving-test-ca")
	require.NoError(t, err)
	pair, err := ca.Serving([]net.IP{net.ParseIP("127.0.0.1")})
	require.NoError(t, err)
	certFile, keyFile, err := pair.WriteFiles(t.TempDir(), "tls")
	require.NoError(t, err)
	return files{ca: ca, certFile: certFile, keyFile: keyFile, pair: pair}
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func testConfig(f files) Config {
	return Config{
		Component: "test", Listen: "127.0.0.1:0", HealthListen: "127.0.0.1:0",
		CertFile: f.certFile, KeyFile: f.keyFile, Logger: quiet(), ShutdownTimeout: 5 * time.Second,
	}
}

type running struct {
	addr, health string
	done         chan error
	cancel       context.CancelFunc
}

// start runs s with app until the test ends; it returns once OnServing was called.
func start(t *testing.T, s *Server, app App) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{done: make(chan error, 1), cancel: cancel}
	serving := make(chan [2]string, 1)
	app.OnServing = func(a, h string) { serving <- [2]string{a, h} }
	go func() { r.done <- s.Run(ctx, app) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	select {
	case a := <-serving:
		r.addr, r.health = a[0], a[1]
	case err := <-r.done:
		t.Fatalf("Run: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("not serving")
	}
	return r
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

var hello = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("hello")) })

func TestRunServesTLSHealthAndMetrics(t *testing.T) {
	f := writePair(t)
	s, err := New(testConfig(f))
	require.NoError(t, err)
	var notReady atomic.Bool
	r := start(t, s, App{Handler: hello, Ready: func() error {
		if notReady.Load() {
			return errors.New("cache lost")
		}
		return nil
	}})

	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: f.ca.Pool(), MinVersion: tls.VersionTLS12}, ForceAttemptHTTP2: true}}
	resp, err := c.Get("https://" + r.addr + "/")
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	assert.Equal(t, "hello", string(b))
	assert.Equal(t, "HTTP/1.1", resp.Proto, "HTTP/2 must be off")

	code, _ := get(t, "http://"+r.health+"/healthz")
	assert.Equal(t, http.StatusOK, code)
	code, _ = get(t, "http://"+r.health+"/readyz")
	assert.Equal(t, http.StatusOK, code)
	notReady.Store(true)
	code, body := get(t, "http://"+r.health+"/readyz")
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Contains(t, body, "cache lost")

	_, metrics := get(t, "http://"+r.health+"/metrics")
	for _, m := range []string{"petfabric_build_info{", "petfabric_serving_certificate_expiry_timestamp_seconds ",
		`petfabric_test_certificate_reloads_total{result="error"} 0`, "go_goroutines ", "process_open_fds "} {
		assert.Contains(t, metrics, m)
	}
}

// dialFails reports whether nothing listens on addr any more.
func dialFails(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return true
	}
	_ = c.Close()
	return false
}

// A start that fails (caches never sync, say) must not leave either server running: the
// process would look alive and answer on its ports while doing nothing.
func TestFailingStartClosesEveryListener(t *testing.T) {
	for _, tc := range []struct {
		name string
		app  func(started chan<- struct{}) App
		want string
	}{
		{"start fails", func(started chan<- struct{}) App {
			return App{Handler: hello, Start: func(context.Context) error {
				close(started)
				time.Sleep(100 * time.Millisecond) // both servers are up meanwhile
				return errors.New("informer cache for PersistentVolumes did not sync")
			}}
		}, "test start: informer cache for PersistentVolumes did not sync"},
		{"background fails", func(started chan<- struct{}) App {
			return App{Handler: hello, Background: func(context.Context) error {
				close(started)
				time.Sleep(100 * time.Millisecond)
				return errors.New("lost the lease client")
			}}
		}, "test background: lost the lease client"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := writePair(t)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			hln, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			cfg := testConfig(f)
			cfg.Listener, cfg.HealthListener = ln, hln
			s, err := New(cfg)
			require.NoError(t, err)
			started := make(chan struct{})
			done := make(chan error, 1)
			go func() { done <- s.Run(context.Background(), tc.app(started)) }()
			<-started
			assert.False(t, dialFails(ln.Addr().String()), "TLS listener serves while starting")
			code, body := get(t, "http://"+hln.Addr().String()+"/readyz")
			if tc.name == "start fails" {
				assert.Equal(t, http.StatusServiceUnavailable, code)
				assert.Contains(t, body, "starting")
			}
			select {
			case err := <-done:
				require.EqualError(t, err, tc.want)
			case <-time.After(10 * time.Second):
				t.Fatal("Run did not return after the failure")
			}
			assert.True(t, dialFails(ln.Addr().String()), "TLS listener still open")
			assert.True(t, dialFails(hln.Addr().String()), "health listener still open")
		})
	}
}

// Shutdown waits for Background (the reconcile loop releasing its lease), and /readyz is 503
// meanwhile.
func TestShutdownWaitsForBackground(t *testing.T) {
	f := writePair(t)
	s, err := New(testConfig(f))
	require.NoError(t, err)
	stopped := make(chan struct{})
	var released atomic.Bool
	r := start(t, s, App{Handler: hello, Background: func(ctx context.Context) error {
		<-ctx.Done()
		time.Sleep(200 * time.Millisecond)
		released.Store(true)
		close(stopped)
		return nil
	}})
	r.cancel()
	select {
	case err := <-r.done:
		require.NoError(t, err)
		r.done <- nil // for the cleanup
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	assert.True(t, released.Load(), "Run returned before Background did")
	assert.True(t, dialFails(r.addr))
	assert.True(t, dialFails(r.health))
}

func certNotAfter(t *testing.T, p *testpki.Pair) time.Time {
	t.Helper()
	b, _ := pem.Decode(p.CertPEM)
	require.NotNil(t, b)
	c, err := x509.ParseCertificate(b.Bytes)
	require.NoError(t, err)
	return c.NotAfter
}

var expiryLine = regexp.MustCompile(`(?m)^petfabric_serving_certificate_expiry_timestamp_seconds (\S+)$`)

func scrapeExpiry(t *testing.T, health string) int64 {
	t.Helper()
	_, m := get(t, "http://"+health+"/metrics")
	sub := expiryLine.FindStringSubmatch(m)
	require.Len(t, sub, 2, "expiry gauge missing")
	v, err := strconv.ParseFloat(sub[1], 64)
	require.NoError(t, err)
	return int64(v)
}

// Certificate health with real files: the expiry gauge follows the certificate in use; files
// that do not load turn /readyz 503 only after CertFailureGrace, while the old pair keeps
// serving; fixed files make it ready again.
func TestCertificateHealth(t *testing.T) {
	f := writePair(t)
	cfg := testConfig(f)
	cfg.CertReloadInterval = 20 * time.Millisecond
	cfg.CertFailureGrace = 400 * time.Millisecond
	s, err := New(cfg)
	require.NoError(t, err)
	r := start(t, s, App{Handler: hello})
	readyz := func() int { c, _ := get(t, "http://"+r.health+"/readyz"); return c }
	require.Equal(t, http.StatusOK, readyz())
	assert.Equal(t, certNotAfter(t, f.pair).Unix(), scrapeExpiry(t, r.health))

	// A broken certificate file: not PEM at all.
	require.NoError(t, os.WriteFile(f.certFile, []byte("-----BEGIN CERTIFICATE-----\ngarbage\n"), 0o600))
	brokenAt := time.Now()
	require.Eventually(t, func() bool { return !s.certs.Status().FailingSince.IsZero() }, 5*time.Second, 10*time.Millisecond)
	if time.Since(brokenAt) < 300*time.Millisecond {
		assert.Equal(t, http.StatusOK, readyz(), "ready within the grace")
	}
	require.Eventually(t, func() bool { return readyz() == http.StatusServiceUnavailable }, 5*time.Second, 20*time.Millisecond)
	assert.GreaterOrEqual(t, time.Since(brokenAt), cfg.CertFailureGrace, "not ready before the grace ran out")
	_, body := get(t, "http://"+r.health+"/readyz")
	assert.Contains(t, body, "serving certificate files have not loaded")
	// The old pair still serves.
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: f.ca.Pool(), MinVersion: tls.VersionTLS12}}}
	resp, err := c.Get("https://" + r.addr + "/")
	require.NoError(t, err)
	_ = resp.Body.Close()

	// A new, valid pair fixes it; the gauge moves to the new certificate.
	time.Sleep(1100 * time.Millisecond) // a NotAfter one second later at least
	next, err := f.ca.Serving([]net.IP{net.ParseIP("127.0.0.1")})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(f.keyFile, next.KeyPEM, 0o600))
	require.NoError(t, os.WriteFile(f.certFile, next.CertPEM, 0o600))
	require.Eventually(t, func() bool { return readyz() == http.StatusOK }, 5*time.Second, 20*time.Millisecond)
	assert.Equal(t, certNotAfter(t, next).Unix(), scrapeExpiry(t, r.health))
	assert.NotEqual(t, certNotAfter(t, f.pair).Unix(), certNotAfter(t, next).Unix())
}

func TestNewRejectsBadConfig(t *testing.T) {
	f := writePair(t)
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no component", func(c *Config) { c.Component = "" }, "Component is required"},
		{"no listen", func(c *Config) { c.Listen = "" }, "no TLS listen address"},
		{"no health listen", func(c *Config) { c.HealthListen = "" }, "no health listen address"},
		{"negative timeout", func(c *Config) { c.Timeouts.Read = -time.Second }, "Timeouts.Read timeout -1s is negative"},
		{"negative health timeout", func(c *Config) { c.HealthTimeouts.Idle = -time.Second }, "HealthTimeouts.Idle timeout -1s is negative"},
		{"negative grace", func(c *Config) { c.CertFailureGrace = -time.Second }, "CertFailureGrace -1s is negative"},
		{"missing key", func(c *Config) { c.KeyFile = "" }, "needs both a certificate file and a key file"},
		{"unreadable cert", func(c *Config) { c.CertFile = "/nonexistent/tls.crt" }, "no such file"},
		{"metric clash", func(c *Config) {
			c.Registry = prometheus.NewRegistry()
			c.Registry.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "petfabric_test_certificate_reloads_total", Help: "x"}))
		}, "register metrics"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(f)
			tc.mod(&cfg)
			_, err := New(cfg)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestTimeoutsWithDefaults(t *testing.T) {
	got, err := Timeouts{Read: time.Second}.WithDefaults(DefaultTimeouts, "T")
	require.NoError(t, err)
	assert.Equal(t, Timeouts{ReadHeader: DefaultTimeouts.ReadHeader, Read: time.Second, Write: DefaultTimeouts.Write, Idle: DefaultTimeouts.Idle}, got)
	// The write bound outlasts both callers' 30 s deadline.
	assert.Greater(t, DefaultTimeouts.Write, 30*time.Second)
}

func TestFlagsSameInBothPrograms(t *testing.T) {
	var c Config
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	c.AddFlags(fs)
	var names []string
	fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
	assert.Equal(t, "cert-failure-grace cert-reload-interval client-ca-file health-listen idle-timeout listen read-header-timeout read-timeout shutdown-timeout tls-cert-file tls-key-file write-timeout", strings.Join(names, " "))
	require.NoError(t, fs.Parse([]string{"--listen=:9443", "--cert-failure-grace=1m", "--read-timeout=3s"}))
	assert.Equal(t, ":9443", c.Listen)
	assert.Equal(t, time.Minute, c.CertFailureGrace)
	assert.Equal(t, 3*time.Second, c.Timeouts.Read)
	assert.Equal(t, DefaultTimeouts.Write, c.Timeouts.Write)
	require.NoError(t, c.CheckFlags())
	c.Timeouts.Idle = 0
	require.EqualError(t, c.CheckFlags(), "--idle-timeout 0s: must be positive")
}

func TestLoggerFrom(t *testing.T) {
	base, scoped := quiet(), quiet().With("uid", "u1")
	assert.Same(t, base, LoggerFrom(context.Background(), base))
	assert.Same(t, scoped, LoggerFrom(WithLogger(context.Background(), scoped), base))
}
