package servingtls

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/petfabric/petfabric/internal/testpki"
)

type fixture struct {
	dir              string
	cert, key, ca    string
	mu               sync.Mutex
	results          []string
	reloader         *CertReloader
	url              string
	firstCA, otherCA *testpki.CA
}

func newFixture(t *testing.T, clientCA bool) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir()}
	var err error
	f.firstCA, err = testpki.NewCA("first")
	require.NoError(t, err)
	f.otherCA, err = testpki.NewCA("other")
	require.NoError(t, err)
	f.cert, f.key = f.writeServing(t, f.firstCA)
	if clientCA {
		f.ca = filepath.Join(f.dir, "client-ca.crt")
		require.NoError(t, os.WriteFile(f.ca, f.firstCA.CertPEM, 0o600))
	}
	f.reloader, err = NewCertReloader(f.cert, f.key, f.ca, nil, func(r string) {
		f.mu.Lock()
		f.results = append(f.results, r)
		f.mu.Unlock()
	})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go f.reloader.Run(ctx, 20*time.Millisecond)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) }))
	srv.TLS = f.reloader.TLSConfig()
	srv.StartTLS()
	t.Cleanup(srv.Close)
	f.url = srv.URL
	return f
}

func (f *fixture) writeServing(t *testing.T, ca *testpki.CA) (string, string) {
	t.Helper()
	pair, err := ca.Serving([]net.IP{net.ParseIP("127.0.0.1")})
	require.NoError(t, err)
	cert, key, err := pair.WriteFiles(f.dir, "tls")
	require.NoError(t, err)
	return cert, key
}

// issuer returns the CommonName of the CA that signed the certificate the server presents.
func (f *fixture) issuer(t *testing.T, client *tls.Config) (string, error) {
	t.Helper()
	conn, err := tls.Dial("tcp", f.url[len("https://"):], client)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].Issuer.CommonName, nil
}

func insecure() *tls.Config {
	return &tls.Config{InsecureSkipVerify: true} //nolint:gosec // the test inspects the served certificate itself
}

func TestReloadsRotatedCertificate(t *testing.T) {
	f := newFixture(t, false)
	got, err := f.issuer(t, insecure())
	require.NoError(t, err)
	assert.Equal(t, "first", got)

	f.writeServing(t, f.otherCA)
	assert.Eventually(t, func() bool {
		got, err := f.issuer(t, insecure())
		return err == nil && got == "other"
	}, 5*time.Second, 20*time.Millisecond, "the rotated certificate must be served without a restart")
	f.mu.Lock()
	assert.Contains(t, f.results, "success")
	f.mu.Unlock()
}

func TestBrokenFilesKeepServingThePreviousPair(t *testing.T) {
	f := newFixture(t, false)
	require.NoError(t, os.WriteFile(f.key, []byte("not a key"), 0o600))
	assert.Eventually(t, func() bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.results) > 0 && f.results[len(f.results)-1] == "error"
	}, 5*time.Second, 20*time.Millisecond)
	got, err := f.issuer(t, insecure())
	require.NoError(t, err, "a half-written rotation must not break serving")
	assert.Equal(t, "first", got)
}

func TestClientCertificateRequiredWhenCAGiven(t *testing.T) {
	f := newFixture(t, true)
	roots := x509.NewCertPool()
	roots.AddCert(f.firstCA.Cert)
	_, err := f.issuer(t, &tls.Config{RootCAs: roots})
	if err == nil {
		// TLS 1.3 reports a missing client certificate on the first read, not in the handshake.
		conn, derr := tls.Dial("tcp", f.url[len("https://"):], &tls.Config{RootCAs: roots})
		require.NoError(t, derr)
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
	}
	require.Error(t, err, "a client without a certificate must be refused")

	pair, err := f.firstCA.Client("kube-apiserver")
	require.NoError(t, err)
	cert, err := tls.X509KeyPair(pair.CertPEM, pair.KeyPEM)
	require.NoError(t, err)
	got, err := f.issuer(t, &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}})
	require.NoError(t, err)
	assert.Equal(t, "first", got)
}

func TestTLSPolicy(t *testing.T) {
	f := newFixture(t, false)
	_, err := f.issuer(t, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS11}) //nolint:gosec // proving the server refuses old TLS
	require.Error(t, err, "TLS below 1.2 must be refused")
	conn, err := tls.Dial("tcp", f.url[len("https://"):], &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2", "http/1.1"}}) //nolint:gosec
	require.NoError(t, err)
	defer conn.Close()
	assert.Equal(t, "http/1.1", conn.ConnectionState().NegotiatedProtocol, "HTTP/2 is off")
}

func TestNewNeedsLoadableFiles(t *testing.T) {
	_, err := NewCertReloader("", "", "", nil, nil)
	require.ErrorContains(t, err, "both a certificate file and a key file")
	_, err = NewCertReloader(filepath.Join(t.TempDir(), "missing.crt"), "x.key", "", nil, nil)
	require.ErrorContains(t, err, "missing.crt")
}
