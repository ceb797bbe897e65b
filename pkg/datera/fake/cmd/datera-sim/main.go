// Command datera-sim serves the in-memory Datera API simulator (pkg/datera/fake) on 127.0.0.1,
// for the demo and for manual runs.
//
//	datera-sim -listen 127.0.0.1:7717
//	datera-sim -listen 127.0.0.1:7718 -tls -ca-out /tmp/datera-ca.pem
//	datera-sim -tgtd-control-port 4711 -portals 127.0.0.1:3260 -backing-dir /var/tmp/datera-sim
//
// It prints one line "datera-sim listening on <URL>" once it accepts connections, and shuts down
// cleanly (removing its iSCSI targets) on SIGINT or SIGTERM.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/petfabric/petfabric/pkg/datera/fake"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "datera-sim:", err)
		os.Exit(1)
	}
}

// run serves until ctx ends; it writes the "listening" line to stdout and logs to stderr.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("datera-sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:7717", "address to serve on; must be a 127.0.0.1 address")
	useTLS := fs.Bool("tls", false, "serve https with a generated self-signed certificate for 127.0.0.1")
	caOut := fs.String("ca-out", "", "with -tls: write the certificate (PEM) here for clients to trust")
	user := fs.String("username", fake.DefaultUser, "API user name")
	password := fs.String("password", fake.DefaultPassword, "API password")
	tenants := fs.String("tenants", "", "comma-separated sub-tenants to create, e.g. /root/team-a")
	portals := fs.String("portals", "", "comma-separated access IPs (ip or ip:port) reported for online volumes")
	tokenTTL := fs.Duration("token-ttl", 15*time.Minute, "session lifetime")
	onlineDelay := fs.Duration("online-delay", 0, "delay before an onlined volume becomes available")
	tgtPort := fs.Int("tgtd-control-port", 0, "real iSCSI mode: control port of a running tgtd (0: off)")
	tgtadm := fs.String("tgtadm", "tgtadm", "real iSCSI mode: tgtadm binary")
	backingDir := fs.String("backing-dir", "", "real iSCSI mode: directory for LUN backing files (default: a temporary directory)")
	debug := fs.Bool("debug", false, "log every request")
	if err := fs.Parse(args); err != nil {
		return err
	}

	host, _, err := net.SplitHostPort(*listen)
	if err != nil {
		return fmt.Errorf("-listen %q: %w", *listen, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.Equal(net.IPv4(127, 0, 0, 1)) {
		return fmt.Errorf("-listen %q: only 127.0.0.1 is allowed", *listen)
	}
	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	opts := fake.Options{
		Users:       map[string]string{*user: *password},
		Tenants:     splitList(*tenants),
		Portals:     splitList(*portals),
		TokenTTL:    *tokenTTL,
		OnlineDelay: *onlineDelay,
		Logger:      log,
	}
	var exporter *fake.TgtExporter
	if *tgtPort != 0 {
		dir := *backingDir
		if dir == "" {
			if dir, err = os.MkdirTemp("", "datera-sim-"); err != nil {
				return err
			}
			defer os.RemoveAll(dir)
		}
		exporter, err = fake.NewTgtExporter(ctx, fake.TgtOptions{ControlPort: *tgtPort, BackingDir: dir, Tgtadm: *tgtadm, Logger: log})
		if err != nil {
			return err
		}
		opts.Exporter = exporter
	}
	sim, err := fake.New(opts)
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: sim, ReadHeaderTimeout: 10 * time.Second}
	scheme := "http"
	if *useTLS {
		cert, certPEM, err := selfSignedCert()
		if err != nil {
			return err
		}
		if *caOut != "" {
			if err := os.WriteFile(*caOut, certPEM, 0o644); err != nil {
				return err
			}
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		ln = tls.NewListener(ln, srv.TLSConfig)
		scheme = "https"
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	fmt.Fprintf(stdout, "datera-sim listening on %s://%s\n", scheme, ln.Addr())

	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = srv.Shutdown(shutdownCtx)
	if exporter != nil {
		err = errors.Join(err, exporter.Close(shutdownCtx))
	}
	return err
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// selfSignedCert makes a one-year certificate for 127.0.0.1 that is its own CA, so a client can
// trust exactly it (datera.Config.CACertPEM) instead of skipping verification.
func selfSignedCert() (tls.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "datera-sim"},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(365 * 24 * time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	cert, err := tls.X509KeyPair(certPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	return cert, certPEM, err
}
