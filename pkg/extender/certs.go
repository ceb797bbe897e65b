package extender

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// CertReloader serves a TLS certificate and an optional client CA bundle from files and
// reloads them when their content changes — cert-manager renews the Secret, the kubelet
// swaps the mounted files, and the extender picks them up without a restart. A change that
// does not load (a half-written pair: new certificate, old key) is logged and counted, and
// the previous pair keeps serving until a later poll sees a consistent set.
//
// It polls file contents instead of watching inotify events: Secret volumes update through
// a symlink swap that inotify watchers easily miss, and reading three small files every
// few seconds costs nothing.
type CertReloader struct {
	certFile, keyFile, caFile string
	log                       *slog.Logger
	metrics                   *Metrics

	mu      sync.RWMutex
	cert    *tls.Certificate
	clients *x509.CertPool
	// raw holds the bytes last loaded successfully, to detect changes.
	raw [3][]byte
}

// NewCertReloader loads the files once; an error here is fatal (nothing to serve yet).
// caFile may be empty: then client certificates are not requested.
func NewCertReloader(certFile, keyFile, caFile string, log *slog.Logger, m *Metrics) (*CertReloader, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("TLS needs both a certificate file and a key file")
	}
	r := &CertReloader{certFile: certFile, keyFile: keyFile, caFile: caFile, log: log, metrics: m}
	if _, err := r.reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// reload loads the files if they changed; changed reports whether a new set took effect.
func (r *CertReloader) reload() (changed bool, err error) {
	var raw [3][]byte
	for i, f := range []string{r.certFile, r.keyFile, r.caFile} {
		if f == "" {
			continue
		}
		if raw[i], err = os.ReadFile(f); err != nil {
			return false, fmt.Errorf("read TLS file: %w", err)
		}
	}
	r.mu.RLock()
	same := bytes.Equal(raw[0], r.raw[0]) && bytes.Equal(raw[1], r.raw[1]) && bytes.Equal(raw[2], r.raw[2])
	r.mu.RUnlock()
	if same {
		return false, nil
	}
	cert, err := tls.X509KeyPair(raw[0], raw[1])
	if err != nil {
		return false, fmt.Errorf("load TLS key pair %s / %s: %w", r.certFile, r.keyFile, err)
	}
	if cert.Leaf != nil && time.Now().After(cert.Leaf.NotAfter) {
		return false, fmt.Errorf("certificate %s expired at %s", r.certFile, cert.Leaf.NotAfter.Format(time.RFC3339))
	}
	var pool *x509.CertPool
	if r.caFile != "" {
		pool = x509.NewCertPool()
		if !pool.AppendCertsFromPEM(raw[2]) {
			return false, fmt.Errorf("client CA file %s holds no PEM certificate", r.caFile)
		}
	}
	r.mu.Lock()
	r.cert, r.clients, r.raw = &cert, pool, raw
	r.mu.Unlock()
	return true, nil
}

// Run polls the files every interval until ctx ends.
func (r *CertReloader) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		changed, err := r.reload()
		switch {
		case err != nil:
			r.log.Error("TLS files changed but cannot be loaded; still serving the previous certificate", "err", err)
			if r.metrics != nil {
				r.metrics.reloads.WithLabelValues("error").Inc()
			}
		case changed:
			r.log.Info("reloaded TLS certificate", "cert", r.certFile, "clientCA", r.caFile)
			if r.metrics != nil {
				r.metrics.reloads.WithLabelValues("success").Inc()
			}
		}
	}
}

// TLSConfig returns the server configuration: TLS 1.2 or later, HTTP/1.1 only (the
// scheduler's extender client speaks HTTP/1.1, and disabling HTTP/2 removes its attack
// surface), the current certificate per handshake, and — when a client CA is configured —
// RequireAndVerifyClientCert against the current CA bundle.
func (r *CertReloader) TLSConfig() *tls.Config {
	base := &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		r.mu.RLock()
		cert, pool := r.cert, r.clients
		r.mu.RUnlock()
		c := &tls.Config{
			MinVersion:   tls.VersionTLS12,
			NextProtos:   []string{"http/1.1"},
			Certificates: []tls.Certificate{*cert},
		}
		if pool != nil {
			c.ClientAuth = tls.RequireAndVerifyClientCert
			c.ClientCAs = pool
		}
		return c, nil
	}
	return base
}
