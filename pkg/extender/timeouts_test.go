package extender

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/client-go/kubernetes/fake"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"

	"github.com/petfabric/petfabric/internal/testpki"
	"github.com/petfabric/petfabric/pkg/serving"
)

// shortTimeouts make the slow-client tests quick; the defaults are tested separately.
var shortTimeouts = serving.Timeouts{ReadHeader: 300 * time.Millisecond, Read: 800 * time.Millisecond, Write: time.Second, Idle: 500 * time.Millisecond}

// startWithTimeouts runs Run with the given timeouts on both listeners.
func startWithTimeouts(t *testing.T, api, health serving.Timeouts) (apiAddr, healthAddr string, tlsConf *tls.Config) {
	t.Helper()
	ca, err := testpki.NewCA("extender-timeouts-ca")
	require.NoError(t, err)
	dir := t.TempDir()
	pair, err := ca.Serving([]net.IP{net.ParseIP("127.0.0.1")})
	require.NoError(t, err)
	certFile, keyFile, err := pair.WriteFiles(dir, "serving")
	require.NoError(t, err)
	al, hl := loopback(t), loopback(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, fake.NewClientset(standardObjectsAt(t, time.Now())...), Config{
			Namespace: ns, Serving: serving.Config{
				Listener: al, HealthListener: hl, CertFile: certFile, KeyFile: keyFile,
				Timeouts: api, HealthTimeouts: health, ShutdownTimeout: 2 * time.Second,
				Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
			},
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + hl.Addr().String() + "/readyz")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 10*time.Second, 20*time.Millisecond)
	return al.Addr().String(), hl.Addr().String(), &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}
}

// heldFor dials, runs the client's part (which writes slowly or not at all), and returns
// how long the server kept the connection open, reading (and discarding) whatever it
// answers. limit stops a server that never closes.
func heldFor(t *testing.T, dial func() (net.Conn, error), client func(net.Conn), limit time.Duration) time.Duration {
	t.Helper()
	c, err := dial()
	require.NoError(t, err)
	defer func() { _ = c.Close() }()
	start := time.Now()
	go client(c)
	require.NoError(t, c.SetReadDeadline(start.Add(limit)))
	_, err = io.Copy(io.Discard, c)
	held := time.Since(start)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the server still held the connection after %s", limit)
	}
	return held
}

// trickle writes head at once, then one byte of rest per tick until a write fails.
func trickle(head, rest string) func(net.Conn) {
	return func(c net.Conn) {
		if _, err := io.WriteString(c, head); err != nil {
			return
		}
		for i := 0; ; i++ {
			time.Sleep(50 * time.Millisecond)
			if _, err := c.Write([]byte{rest[i%len(rest)]}); err != nil {
				return
			}
		}
	}
}

// oneRequestThenIdle sends a complete request, reads the answer, and then says nothing.
func oneRequestThenIdle(t *testing.T, req string) func(net.Conn) {
	return func(c net.Conn) {
		if _, err := io.WriteString(c, req); err != nil {
			t.Errorf("write: %v", err)
		}
	}
}

// TestSlowClientsAreCutOff: slowloris against both listeners. A client dribbling its
// headers, dribbling a body, or idling on a kept-alive connection loses the connection
// once the matching timeout has passed, instead of holding a goroutine and a socket for
// as long as it likes.
func TestSlowClientsAreCutOff(t *testing.T) {
	apiAddr, healthAddr, tlsConf := startWithTimeouts(t, shortTimeouts, shortTimeouts)
	dialAPI := func() (net.Conn, error) { return tls.Dial("tcp", apiAddr, tlsConf) }
	dialHealth := func() (net.Conn, error) { return net.Dial("tcp", healthAddr) }
	const slack = 2 * time.Second // a loaded machine
	for _, port := range []struct {
		name string
		dial func() (net.Conn, error)
		path string
	}{{"https", dialAPI, FilterPath}, {"health", dialHealth, "/healthz"}} {
		t.Run(port.name+"/slow headers", func(t *testing.T) {
			held := heldFor(t, port.dial, trickle("GET "+port.path+" HTTP/1.1\r\nHost: x\r\n", "X-Slow: loris\r\n"), 20*time.Second)
			assert.Less(t, held, shortTimeouts.ReadHeader+slack)
			assert.GreaterOrEqual(t, held, shortTimeouts.ReadHeader*8/10)
		})
		t.Run(port.name+"/slow body", func(t *testing.T) {
			held := heldFor(t, port.dial, trickle("POST "+port.path+" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n", "{"), 20*time.Second)
			assert.Less(t, held, shortTimeouts.Read+slack)
			assert.GreaterOrEqual(t, held, shortTimeouts.Read*8/10)
		})
		t.Run(port.name+"/idle keep-alive", func(t *testing.T) {
			held := heldFor(t, port.dial, oneRequestThenIdle(t, "GET "+port.path+" HTTP/1.1\r\nHost: x\r\n\r\n"), 20*time.Second)
			assert.Less(t, held, shortTimeouts.Idle+slack)
			assert.GreaterOrEqual(t, held, shortTimeouts.Idle*8/10)
		})
	}
}

func TestNegativeTimeoutIsRejected(t *testing.T) {
	base := serving.Config{Listen: "127.0.0.1:0", HealthListen: "127.0.0.1:0", CertFile: "x", KeyFile: "y"}
	withAPI, withHealth := base, base
	withAPI.Timeouts = serving.Timeouts{Write: -time.Second}
	withHealth.HealthTimeouts = serving.Timeouts{Idle: -time.Second}
	err := Run(context.Background(), fake.NewClientset(), Config{Namespace: ns, Serving: withAPI})
	require.ErrorContains(t, err, "Timeouts.Write timeout -1s is negative")
	err = Run(context.Background(), fake.NewClientset(), Config{Namespace: ns, Serving: withHealth})
	require.ErrorContains(t, err, "HealthTimeouts.Idle timeout -1s is negative")
}

// TestDefaultTimeoutsAllowTheLargestRequest: with the default timeouts, the HTTPS server
// reads and answers the largest request kube-scheduler sends a 5,000-node cluster, in
// names-only and in full-Node mode, with room to spare. The durations are logged.
func TestDefaultTimeoutsAllowTheLargestRequest(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 15 MB request")
	}
	src, pod, names := benchState(t, 5000)
	ca, err := testpki.NewCA("extender-big-ca")
	require.NoError(t, err)
	pair, err := ca.Serving([]net.IP{net.ParseIP("127.0.0.1")})
	require.NoError(t, err)
	cert, err := tls.X509KeyPair(pair.CertPEM, pair.KeyPEM)
	require.NoError(t, err)
	srv := serving.DefaultTimeouts.Apply(&http.Server{Handler: NewHandler(src, HandlerOptions{Log: quiet()}),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}})
	ln := loopback(t)
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}}}

	items := make([]string, len(names))
	for i, n := range names {
		items[i] = string(kwokNode(n))
	}
	podJSON, err := json.Marshal(pod)
	require.NoError(t, err)
	namesBody, err := json.Marshal(extenderv1.ExtenderArgs{Pod: pod, NodeNames: &names})
	require.NoError(t, err)
	fullBody := []byte(`{"Pod":` + string(podJSON) + `,"Nodes":{"metadata":{},"items":[` + strings.Join(items, ",") + `]},"NodeNames":null}`)

	for _, tc := range []struct {
		name string
		body []byte
	}{{"names", namesBody}, {"full Nodes", fullBody}} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			resp, err := client.Post("https://"+ln.Addr().String()+FilterPath, "application/json", bytes.NewReader(tc.body))
			require.NoError(t, err)
			out, err := io.ReadAll(bufio.NewReader(resp.Body))
			_ = resp.Body.Close()
			took := time.Since(start)
			require.NoError(t, err)
			require.Equal(t, http.StatusOK, resp.StatusCode, "%.300s", out)
			var res extenderv1.ExtenderFilterResult
			require.NoError(t, json.Unmarshal(out, &res))
			passed := 0
			if res.NodeNames != nil {
				passed = len(*res.NodeNames)
			} else if res.Nodes != nil {
				passed = len(res.Nodes.Items)
			}
			assert.Greater(t, passed, 4000)
			t.Logf("%s: %d-byte request, %d-byte answer, %s (WriteTimeout %s)", tc.name, len(tc.body), len(out), took.Round(time.Millisecond), serving.DefaultTimeouts.Write)
			assert.Less(t, took, serving.DefaultTimeouts.Write/3, "too close to the default WriteTimeout")
		})
	}
}
