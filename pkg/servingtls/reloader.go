// Package servingtls serves TLS for petfabric's listeners that the apiserver and the scheduler
// call: certificates reloaded from files without a restart, TLS ≥ 1.2, HTTP/1.1 only, and
// optional client-certificate verification.
package servingtls

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
	observe                   func(result string)

	mu      sync.RWMutex
	cert    *tls.Certificate
	clients *x509.CertPool
	// raw holds the bytes last loaded successfully, to detect changes.
	raw [3][]byte
	// notAfter is the expiry of the certificate being served.
	notAfter time.Time
	// failingSince is when the polls started failing to load changed files (zero while the
	// files load or are unchanged); lastErr is the latest failure.
	failingSince time.Time
	lastErr      error
}

// Status is the health of the served certificate.
type Status struct {
	// NotAfter is when the certificate being served expires.
	NotAfter time.Time
	// FailingSince is when the files started failing to load (zero while they load or are
	// unchanged); Err is the latest failure.
	FailingSince time.Time
	Err          error
}

// Status returns the served certificate's expiry and how long reloads have been failing.
func (r *CertReloader) Status() Status {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return Status{NotAfter: r.notAfter, FailingSince: r.failingSince, Err: r.lastErr}
}

// NewCertReloader loads the files once; an error here is fatal (nothing to serve yet).
// caFile may be empty: then client certificates are not requested. observe, when not nil,
// is told the result ("success" or "error") of every reload attempt after the first.
func NewCertReloader(certFile, keyFile, caFile string, log *slog.Logger, observe func(result string)) (*CertReloader, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("TLS needs both a certificate file and a key file")
	}
	if log == nil {
		log = slog.Default()
	}
	if observe == nil {
		observe = func(string) {}
	}
	r := &CertReloader{certFile: certFile, keyFile: keyFile, caFile: caFile, log: log, observe: observe}
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
	if cert.Leaf != nil {
		r.notAfter = cert.Leaf.NotAfter
	}
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
		r.Poll()
	}
}

// Poll checks the files once (Run calls it every interval): a changed, consistent set takes
// effect; a changed set that does not load keeps the previous one and starts (or continues)
// the failure period Status reports, which ends at the next poll that loads or finds the
// files back to the set being served.
func (r *CertReloader) Poll() {
	changed, err := r.reload()
	r.mu.Lock()
	if err != nil {
		if r.failingSince.IsZero() {
			r.failingSince = time.Now()
		}
		r.lastErr = err
	} else {
		r.failingSince, r.lastErr = time.Time{}, nil
	}
	r.mu.Unlock()
	switch {
	case err != nil:
		r.log.Error("TLS files changed but cannot be loaded; still serving the previous certificate", "err", err)
		r.observe("error")
	case changed:
		r.log.Info("reloaded TLS certificate", "cert", r.certFile, "clientCA", r.caFile)
		r.observe("success")
	}
}

// TLSConfig returns the server configuration: TLS 1.2 or later, HTTP/1.1 only (the
// scheduler's extender client speaks HTTP/1.1, and disabling HTTP/2 removes its attack
// surface; CVE-2023-44487), the current certificate per handshake, and — when a client CA is configured —
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
