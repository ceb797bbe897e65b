// Package extender is the HTTP side of petfabric's kube-scheduler extender: the informer
// cache of claims, volumes and node report Leases (Cache), the filter/prioritize handler
// (NewHandler, decisions in pkg/placement), TLS with hot certificate reload
// (pkg/servingtls), metrics, and Run, which wires them into an HTTPS server for the
// scheduler plus a plain server for /healthz, /readyz and /metrics.
package extender

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/client-go/kubernetes"

	"github.com/petfabric/petfabric/pkg/placement"
	"github.com/petfabric/petfabric/pkg/servingtls"
)

// Config configures Run.
type Config struct {
	// Namespace holds the nodes' report Leases (the release namespace).
	Namespace string
	// Addr is the HTTPS address kube-scheduler calls (e.g. ":8443"); Listener, when set,
	// is used instead (tests bind 127.0.0.1:0 themselves).
	Addr     string
	Listener net.Listener
	// HealthAddr serves /healthz, /readyz and /metrics over plain HTTP (e.g. ":8080");
	// HealthListener overrides it like Listener.
	HealthAddr     string
	HealthListener net.Listener
	// CertFile and KeyFile are the serving pair; ClientCAFile, when set, makes client
	// certificates mandatory and verified against it. All are reloaded on change.
	CertFile, KeyFile, ClientCAFile string
	// CertReloadInterval is how often the TLS files are checked (default 10s).
	CertReloadInterval time.Duration
	// MaxBodyBytes bounds request bodies (default DefaultMaxBodyBytes).
	MaxBodyBytes int64
	// PortalPolicy is AllPortals (default) or AnyPortal.
	PortalPolicy placement.PortalPolicy
	// ShutdownTimeout bounds the graceful shutdown (default 10s).
	ShutdownTimeout time.Duration
	// Log is the logger (slog.Default when nil).
	Log *slog.Logger
}

// Run serves until ctx ends, then shuts down gracefully: /readyz turns 503 first, in-flight
// requests finish (within ShutdownTimeout), informers stop.
func Run(ctx context.Context, client kubernetes.Interface, cfg Config) error {
	log := cfg.Log
	if log == nil {
		log = slog.Default()
	}
	if cfg.Namespace == "" {
		return errors.New("extender: the namespace of the node report Leases is required")
	}
	if cfg.CertReloadInterval <= 0 {
		cfg.CertReloadInterval = 10 * time.Second
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	metrics := NewMetrics()
	certs, err := servingtls.NewCertReloader(cfg.CertFile, cfg.KeyFile, cfg.ClientCAFile, log, func(result string) {
		metrics.reloads.WithLabelValues(result).Inc()
	})
	if err != nil {
		return fmt.Errorf("extender TLS: %w", err)
	}
	cache, err := NewCache(client, cfg.Namespace, log)
	if err != nil {
		return fmt.Errorf("extender cache: %w", err)
	}
	metrics.RegisterReportStats(cache, time.Now)

	ln, err := listen(cfg.Listener, cfg.Addr)
	if err != nil {
		return fmt.Errorf("extender HTTPS listener: %w", err)
	}
	hln, err := listen(cfg.HealthListener, cfg.HealthAddr)
	if err != nil {
		_ = ln.Close()
		return fmt.Errorf("extender health listener: %w", err)
	}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	cache.Start(runCtx)
	defer cache.Shutdown()
	go certs.Run(runCtx, cfg.CertReloadInterval)

	var stopping atomic.Bool
	api := &http.Server{
		Handler: NewHandler(cache, HandlerOptions{
			MaxBodyBytes: cfg.MaxBodyBytes, PortalPolicy: cfg.PortalPolicy, Log: log, Metrics: metrics,
		}),
		TLSConfig:         certs.TLSConfig(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	api.Protocols = new(http.Protocols)
	api.Protocols.SetHTTP1(true) // HTTP/2 off

	health := &http.Server{
		Handler:           healthHandler(cache, metrics, &stopping),
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}

	errc := make(chan error, 2)
	go func() { errc <- serveErr("HTTPS", api.ServeTLS(ln, "", "")) }()
	go func() { errc <- serveErr("health", health.Serve(hln)) }()
	log.Info("scheduler extender serving", "https", ln.Addr().String(), "health", hln.Addr().String(),
		"namespace", cfg.Namespace, "clientCA", cfg.ClientCAFile != "")

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}
	stopping.Store(true)
	sctx, scancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer scancel()
	if err := api.Shutdown(sctx); err != nil {
		runErr = errors.Join(runErr, fmt.Errorf("shutting down HTTPS server: %w", err))
	}
	if err := health.Shutdown(sctx); err != nil {
		runErr = errors.Join(runErr, fmt.Errorf("shutting down health server: %w", err))
	}
	log.Info("scheduler extender stopped")
	return runErr
}

func listen(l net.Listener, addr string) (net.Listener, error) {
	if l != nil {
		return l, nil
	}
	if addr == "" {
		return nil, errors.New("no address")
	}
	return net.Listen("tcp", addr)
}

func serveErr(what string, err error) error {
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("%s server: %w", what, err)
}

// healthHandler serves the plain port: /healthz (the process answers), /readyz (informers
// synced and not shutting down), /metrics.
func healthHandler(c interface{ Ready() bool }, m *Metrics, stopping *atomic.Bool) http.Handler {
	r := chi.NewRouter()
	r.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	r.Get("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		switch {
		case stopping.Load():
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
		case !c.Ready():
			http.Error(w, "informer caches (claims, volumes, report Leases) not synced yet", http.StatusServiceUnavailable)
		default:
			_, _ = w.Write([]byte("ok\n"))
		}
	})
	r.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry}))
	return r
}
