package webhook

import (
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/petfabric/petfabric/internal/testpki"
	"github.com/petfabric/petfabric/pkg/serving"
)

// runForTest starts Run on 127.0.0.1 with a fake clientset and returns the admission address.
func runForTest(t *testing.T, mod func(*RunConfig)) (addr string, tlsCfg *tls.Config) {
	t.Helper()
	ca, err := testpki.NewCA("timeouts-ca")
	require.NoError(t, err)
	pair, err := ca.Serving([]net.IP{net.ParseIP("127.0.0.1")})
	require.NoError(t, err)
	certFile, keyFile, err := pair.WriteFiles(t.TempDir(), "tls")
	require.NoError(t, err)
	ready := make(chan string, 1)
	cfg := RunConfig{
		Mutate: testCfg,
		Serving: serving.Config{
			Listen: "127.0.0.1:0", HealthListen: "127.0.0.1:0", CertFile: certFile, KeyFile: keyFile,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), ShutdownTimeout: time.Second,
		},
		OnServing: func(a, _ string) { ready <- a },
	}
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, fake.NewClientset(), cfg) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case addr = <-ready:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("not ready")
	}
	return addr, &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}
}

// closedWithin reports whether the server closes conn within d (reads until EOF or error).
func closedWithin(conn net.Conn, d time.Duration) (bool, time.Duration) {
	start := time.Now()
	_ = conn.SetReadDeadline(start.Add(d))
	_, err := io.Copy(io.Discard, conn)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return false, time.Since(start)
	}
	return true, time.Since(start)
}

// requireCutOff asserts that the server closes conn within 5 s (waiting up to 10 s).
func requireCutOff(t *testing.T, conn net.Conn, what string) {
	t.Helper()
	closed, after := closedWithin(conn, 10*time.Second)
	require.True(t, closed, "%s still open after %v", what, after)
	require.Less(t, after, 5*time.Second)
}

// trickle writes line(i), i = 0, 1, …, to conn every interval until the returned stop is
// called or a write fails.
func trickle(conn net.Conn, every time.Duration, line func(i int) string) (stop func()) {
	done := make(chan struct{})
	go func() {
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			case <-time.After(every):
				if _, err := io.WriteString(conn, line(i)); err != nil {
					return
				}
			}
		}
	}()
	return func() { close(done) }
}

// A client that sends its headers and then trickles the body (slowloris on the body) holds a
// connection and a goroutine for as long as it likes unless the server has a ReadTimeout.
func TestSlowBodyClientIsCutOff(t *testing.T) {
	addr, tlsCfg := runForTest(t, shortTimeouts)
	conn, err := tls.Dial("tcp", addr, tlsCfg)
	require.NoError(t, err)
	defer conn.Close()
	_, err = io.WriteString(conn, "POST "+PathStatefulSets+" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
	require.NoError(t, err)
	defer trickle(conn, 500*time.Millisecond, func(int) string { return " " })()
	requireCutOff(t, conn, "slow-body connection")
}

// A client that never finishes its headers (classic slowloris) is cut off too.
func TestSlowHeaderClientIsCutOff(t *testing.T) {
	addr, tlsCfg := runForTest(t, shortTimeouts)
	conn, err := tls.Dial("tcp", addr, tlsCfg)
	require.NoError(t, err)
	defer conn.Close()
	_, err = io.WriteString(conn, "POST "+PathStatefulSets+" HTTP/1.1\r\nHost: x\r\n")
	require.NoError(t, err)
	defer trickle(conn, 300*time.Millisecond, func(i int) string { return "X-Slow: " + strconv.Itoa(i) + "\r\n" })()
	requireCutOff(t, conn, "slow-header connection")
}

// The health listener (plain HTTP) has the same timeouts.
func TestHealthListenerIdleIsClosed(t *testing.T) {
	var health string
	_, _ = runForTest(t, func(c *RunConfig) {
		shortTimeouts(c)
		ready := c.OnServing
		c.OnServing = func(a, h string) { health = h; ready(a, h) }
	})
	conn, err := net.Dial("tcp", health)
	require.NoError(t, err)
	defer conn.Close()
	_, err = io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	require.NoError(t, err)
	requireCutOff(t, conn, "idle health connection")
}

// The defaults fit the apiserver's call: the write timeout outlasts the largest webhook
// timeout (30 s).
func TestDefaultTimeouts(t *testing.T) {
	d := serving.DefaultTimeouts
	require.Greater(t, d.Write, 30*time.Second)
	for _, d := range []time.Duration{d.ReadHeader, d.Read} {
		require.Greater(t, d, time.Duration(0))
		require.LessOrEqual(t, d, 30*time.Second)
	}
}

func shortTimeouts(c *RunConfig) {
	short := serving.Timeouts{ReadHeader: time.Second, Read: 2 * time.Second, Write: 3 * time.Second, Idle: time.Second}
	c.Serving.Timeouts, c.Serving.HealthTimeouts = short, short
}

// An idle keep-alive connection is closed by the server.
func TestIdleKeepAliveIsClosed(t *testing.T) {
	addr, tlsCfg := runForTest(t, shortTimeouts)
	conn, err := tls.Dial("tcp", addr, tlsCfg)
	require.NoError(t, err)
	defer conn.Close()
	_, err = io.WriteString(conn, "GET "+PathStatefulSets+" HTTP/1.1\r\nHost: x\r\n\r\n")
	require.NoError(t, err)
	buf := make([]byte, 4096)
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := conn.Read(buf)
	require.NoError(t, err)
	require.Contains(t, string(buf[:n]), "405")
	requireCutOff(t, conn, "idle keep-alive")
}
