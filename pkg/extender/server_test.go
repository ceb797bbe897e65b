package extender

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/client-go/kubernetes/fake"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"

	"github.com/petfabric/petfabric/internal/testpki"
	"github.com/petfabric/petfabric/pkg/serving"
)

type runningServer struct {
	api, health string
	dir         string
	certFile    string
	keyFile     string
	caFile      string
	cancel      context.CancelFunc
	done        chan error
}

func loopback(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	return l
}

// startServer runs Run over a fake clientset with a serving pair from ca (and, when
// clientCA is set, mandatory client certificates).
func startServer(t *testing.T, ca *testpki.CA, clientCA *testpki.CA) *runningServer {
	t.Helper()
	dir := t.TempDir()
	pair, err := ca.Serving([]net.IP{net.ParseIP("127.0.0.1")})
	require.NoError(t, err)
	certFile, keyFile, err := pair.WriteFiles(dir, "serving")
	require.NoError(t, err)
	s := &runningServer{dir: dir, certFile: certFile, keyFile: keyFile, done: make(chan error, 1)}
	if clientCA != nil {
		s.caFile = filepath.Join(dir, "client-ca.crt")
		require.NoError(t, os.WriteFile(s.caFile, clientCA.CertPEM, 0o600))
	}
	api, health := loopback(t), loopback(t)
	s.api, s.health = api.Addr().String(), health.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	objs := standardObjectsAt(t, time.Now())
	for _, o := range objs {
		// Run's cache counts every Lease it sees at start as just renewed (it cannot
		// trust renewTime); a Lease never renewed at all is stale from the start.
		if l, ok := o.(*coordinationv1.Lease); ok && *l.Spec.HolderIdentity == "d" {
			l.Spec.RenewTime = nil
		}
	}
	go func() {
		s.done <- Run(ctx, fake.NewClientset(objs...), Config{
			Namespace: ns, Serving: serving.Config{
				Listener: api, HealthListener: health,
				CertFile: certFile, KeyFile: keyFile, ClientCAFile: s.caFile,
				CertReloadInterval: 50 * time.Millisecond,
				Logger:             slog.New(slog.NewTextHandler(io.Discard, nil)),
			},
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-s.done:
		case <-time.After(15 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + s.health + "/readyz")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 10*time.Second, 20*time.Millisecond)
	return s
}

func tlsClient(roots *x509.CertPool, cert *testpki.Pair, mutate func(*tls.Config)) *http.Client {
	cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if cert != nil {
		c, err := tls.X509KeyPair(cert.CertPEM, cert.KeyPEM)
		if err != nil {
			panic(err)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	if mutate != nil {
		mutate(cfg)
	}
	// ForceAttemptHTTP2 offers h2 in ALPN; the server must still answer with HTTP/1.1.
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}}
}

func filterOnce(c *http.Client, addr string) (*http.Response, extenderv1.ExtenderFilterResult, error) {
	names := []string{"a", "b"}
	body, _ := json.Marshal(extenderv1.ExtenderArgs{Pod: claimPod("db-0", "data-db-0"), NodeNames: &names})
	var res extenderv1.ExtenderFilterResult
	resp, err := c.Post("https://"+addr+FilterPath, "application/json", bytes.NewReader(body))
	if err != nil {
		return nil, res, err
	}
	defer func() { _ = resp.Body.Close() }()
	err = json.NewDecoder(resp.Body).Decode(&res)
	return resp, res, err
}

func TestRunServesTLSHealthAndMetrics(t *testing.T) {
	ca, err := testpki.NewCA("extender-test-ca")
	require.NoError(t, err)
	s := startServer(t, ca, nil)

	resp, res, err := filterOnce(tlsClient(ca.Pool(), nil, nil), s.api)
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "HTTP/1.1", resp.Proto, "HTTP/2 must be off")
	assert.Equal(t, []string{"a"}, *res.NodeNames)

	t.Run("TLS 1.1 refused", func(t *testing.T) {
		_, _, err := filterOnce(tlsClient(ca.Pool(), nil, func(c *tls.Config) {
			c.MinVersion, c.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
		}), s.api)
		require.ErrorContains(t, err, "protocol version not supported", "the server, not the client, refuses")
	})
	t.Run("plain HTTP on the TLS port refused", func(t *testing.T) {
		resp, err := http.Post("http://"+s.api+FilterPath, "application/json", strings.NewReader("{}"))
		if err == nil {
			defer func() { _ = resp.Body.Close() }()
			assert.Equal(t, http.StatusBadRequest, resp.StatusCode, "Go answers plain HTTP on a TLS port with 400")
		}
	})
	t.Run("health port", func(t *testing.T) {
		for path, want := range map[string]string{
			"/healthz": "ok",
			"/readyz":  "ok",
			"/metrics": `petfabric_extender_filter_decisions_total{reason="no_report"} 1`,
		} {
			resp, err := http.Get("http://" + s.health + path)
			require.NoError(t, err)
			b, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			assert.Equal(t, http.StatusOK, resp.StatusCode, path)
			assert.True(t, strings.Contains(string(b), want), "%s lacks %s", path, want)
		}
		resp, err := http.Get("http://" + s.health + "/metrics")
		require.NoError(t, err)
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		for _, want := range []string{
			`petfabric_extender_request_duration_seconds_bucket{path="full",verb="filter"`,
			`petfabric_extender_node_reports{state="fresh"} 2`,
			`petfabric_extender_node_reports{state="stale"} 1`,
		} {
			assert.True(t, strings.Contains(string(b), want), "/metrics lacks %s", want)
		}
	})
	t.Run("graceful shutdown", func(t *testing.T) {
		s.cancel()
		select {
		case err := <-s.done:
			require.NoError(t, err)
			s.done <- nil // for the cleanup
		case <-time.After(15 * time.Second):
			t.Fatal("Run did not return")
		}
		_, err := http.Get("http://" + s.health + "/healthz")
		require.Error(t, err, "listeners closed after shutdown")
	})
}

func TestRunClientCertificates(t *testing.T) {
	ca, err := testpki.NewCA("serving-ca")
	require.NoError(t, err)
	clients, err := testpki.NewCA("scheduler-client-ca")
	require.NoError(t, err)
	other, err := testpki.NewCA("someone-else")
	require.NoError(t, err)
	s := startServer(t, ca, clients)

	good, err := clients.Client("system:kube-scheduler")
	require.NoError(t, err)
	bad, err := other.Client("system:kube-scheduler")
	require.NoError(t, err)

	resp, res, err := filterOnce(tlsClient(ca.Pool(), good, nil), s.api)
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, []string{"a"}, *res.NodeNames)

	_, _, err = filterOnce(tlsClient(ca.Pool(), nil, nil), s.api)
	require.Error(t, err, "no client certificate")
	_, _, err = filterOnce(tlsClient(ca.Pool(), bad, nil), s.api)
	require.Error(t, err, "client certificate from an unknown CA")

	// Rotating the client CA file takes effect without a restart.
	require.NoError(t, os.WriteFile(s.caFile, other.CertPEM, 0o600))
	require.Eventually(t, func() bool {
		_, _, err := filterOnce(tlsClient(ca.Pool(), bad, nil), s.api)
		return err == nil
	}, 5*time.Second, 50*time.Millisecond)
	_, _, err = filterOnce(tlsClient(ca.Pool(), good, nil), s.api)
	require.Error(t, err, "the old client CA no longer counts")
}

func TestRunReloadsServingCertificate(t *testing.T) {
	ca1, err := testpki.NewCA("first-ca")
	require.NoError(t, err)
	ca2, err := testpki.NewCA("second-ca")
	require.NoError(t, err)
	s := startServer(t, ca1, nil)

	serial := func(roots *x509.CertPool) (string, error) {
		c, err := tls.Dial("tcp", s.api, &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12})
		if err != nil {
			return "", err
		}
		defer func() { _ = c.Close() }()
		return c.ConnectionState().PeerCertificates[0].SerialNumber.String(), nil
	}
	_, err = serial(ca1.Pool())
	require.NoError(t, err)

	// A broken write (garbage certificate) must not take the server down.
	require.NoError(t, os.WriteFile(s.certFile, []byte("not a certificate"), 0o600))
	time.Sleep(300 * time.Millisecond)
	_, err = serial(ca1.Pool())
	require.NoError(t, err, "the previous pair keeps serving while the files are broken")

	// A new pair from another CA is picked up.
	pair, err := ca2.Serving([]net.IP{net.ParseIP("127.0.0.1")})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(s.keyFile, pair.KeyPEM, 0o600))
	require.NoError(t, os.WriteFile(s.certFile, pair.CertPEM, 0o600))
	require.Eventually(t, func() bool {
		_, err := serial(ca2.Pool())
		return err == nil
	}, 5*time.Second, 50*time.Millisecond)
	_, err = serial(ca1.Pool())
	require.Error(t, err, "the old certificate is gone")

	resp, err := http.Get("http://" + s.health + "/metrics")
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	assert.True(t, regexp.MustCompile(`petfabric_extender_certificate_reloads_total\{result="error"\} [1-9]`).Match(b), "reload error counted")
	assert.True(t, regexp.MustCompile(`petfabric_extender_certificate_reloads_total\{result="success"\} [1-9]`).Match(b), "reload success counted")
}

func TestRunConfigErrors(t *testing.T) {
	client := fake.NewClientset()
	listen := func(c serving.Config) serving.Config {
		c.Listen, c.HealthListen = "127.0.0.1:0", "127.0.0.1:0"
		return c
	}
	err := Run(context.Background(), client, Config{Namespace: "", Serving: listen(serving.Config{CertFile: "x", KeyFile: "y"})})
	require.ErrorContains(t, err, "namespace")
	err = Run(context.Background(), client, Config{Namespace: ns, Serving: listen(serving.Config{CertFile: "/nonexistent.crt", KeyFile: "/nonexistent.key"})})
	require.ErrorContains(t, err, "extender serving certificate")
	dir := t.TempDir()
	ca, err := testpki.NewCA("x")
	require.NoError(t, err)
	pair, err := ca.Serving([]net.IP{net.ParseIP("127.0.0.1")})
	require.NoError(t, err)
	cert, key, err := pair.WriteFiles(dir, "s")
	require.NoError(t, err)
	bogusCA := filepath.Join(dir, "ca.crt")
	require.NoError(t, os.WriteFile(bogusCA, []byte("nope"), 0o600))
	err = Run(context.Background(), client, Config{Namespace: ns, Serving: listen(serving.Config{CertFile: cert, KeyFile: key, ClientCAFile: bogusCA})})
	require.ErrorContains(t, err, "holds no PEM certificate")
}
