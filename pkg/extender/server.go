// Package extender is the HTTP side of petfabric's kube-scheduler extender: the informer
// cache of claims, volumes and node report Leases (Cache), the filter/prioritize handler
// (NewHandler, decisions in pkg/placement), TLS with hot certificate reload
// (pkg/servingtls), metrics, and Run, which wires them into an HTTPS server for the
// scheduler plus a plain server for /healthz, /readyz and /metrics.
package extender

import (
	"context"
	"crypto/tls"
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
	// MaxReportTTL caps the freshness a node report Lease may declare
	// (default placement.DefaultMaxReportTTL).
	MaxReportTTL time.Duration
	// ShutdownTimeout bounds the graceful shutdown (default 10s).
	ShutdownTimeout time.Duration
	// APITimeouts bound each connection of the HTTPS listener, HealthTimeouts those of the
	// health listener; zero fields take DefaultAPITimeouts and DefaultHealthTimeouts.
	APITimeouts, HealthTimeouts Timeouts
	// Log is the logger (slog.Default when nil).
	Log *slog.Logger
}

// Timeouts bound how long one client connection may hold a listener's goroutine and
// socket: a client that sends its headers or body a byte at a time, never reads the
// answer, or keeps an idle connection open, is cut off.
type Timeouts struct {
	// ReadHeader bounds reading a request's headers.
	ReadHeader time.Duration
	// Read bounds reading a whole request, headers and body.
	Read time.Duration
	// Write bounds, from the end of the headers, reading the body, deciding and writing
	// the answer.
	Write time.Duration
	// Idle bounds the wait for the next request on a kept-alive connection.
	Idle time.Duration
}

// DefaultAPITimeouts suit kube-scheduler. The largest request, full Node objects for
// 5,000 nodes (about 11 MB), is read and answered in about half a second on loopback
// (TestDefaultTimeoutsAllowTheLargestRequest); 30 s leaves room for a slow network and
// matches kube-scheduler's default extender httpTimeout (30 s), after which it has given
// up anyway. kube-scheduler keeps its connections alive between scheduling cycles, so the
// idle timeout is generous.
var DefaultAPITimeouts = Timeouts{ReadHeader: 5 * time.Second, Read: 30 * time.Second, Write: 30 * time.Second, Idle: 2 * time.Minute}

// DefaultHealthTimeouts suit kubelet probes and Prometheus scrapes: no request bodies,
// small answers.
var DefaultHealthTimeouts = Timeouts{ReadHeader: 5 * time.Second, Read: 10 * time.Second, Write: 10 * time.Second, Idle: time.Minute}

// withDefaults fills zero fields from def; negative ones are an error naming the field.
func (t Timeouts) withDefaults(def Timeouts, what string) (Timeouts, error) {
	for _, f := range []struct {
		name string
		v    *time.Duration
		def  time.Duration
	}{{"ReadHeader", &t.ReadHeader, def.ReadHeader}, {"Read", &t.Read, def.Read}, {"Write", &t.Write, def.Write}, {"Idle", &t.Idle, def.Idle}} {
		switch {
		case *f.v < 0:
			return t, fmt.Errorf("extender: %s.%s timeout %s is negative", what, f.name, *f.v)
		case *f.v == 0:
			*f.v = f.def
		}
	}
	return t, nil
}

func (t Timeouts) apply(s *http.Server) *http.Server {
	s.ReadHeaderTimeout, s.ReadTimeout, s.WriteTimeout, s.IdleTimeout = t.ReadHeader, t.Read, t.Write, t.Idle
	return s
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
	apiTimeouts, err := cfg.APITimeouts.withDefaults(DefaultAPITimeouts, "APITimeouts")
	if err != nil {
		return err
	}
	healthTimeouts, err := cfg.HealthTimeouts.withDefaults(DefaultHealthTimeouts, "HealthTimeouts")
	if err != nil {
		return err
	}
	metrics := NewMetrics()
	certs, err := servingtls.NewCertReloader(cfg.CertFile, cfg.KeyFile, cfg.ClientCAFile, log, func(result string) {
		metrics.reloads.WithLabelValues(result).Inc()
	})
	if err != nil {
		return fmt.Errorf("extender TLS: %w", err)
	}
	cache, err := NewCache(client, cfg.Namespace, log, CacheOptions{MaxReportTTL: cfg.MaxReportTTL})
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
	api := apiServer(NewHandler(cache, HandlerOptions{
		MaxBodyBytes: cfg.MaxBodyBytes, PortalPolicy: cfg.PortalPolicy, Log: log, Metrics: metrics,
	}), certs.TLSConfig(), apiTimeouts, log)
	health := healthTimeouts.apply(&http.Server{
		Handler:  healthHandler(cache, metrics, &stopping),
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	})

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

// apiServer is the scheduler-facing HTTPS server: HTTP/1.1 only, bounded by t.
func apiServer(h http.Handler, tlsConf *tls.Config, t Timeouts, log *slog.Logger) *http.Server {
	s := t.apply(&http.Server{
		Handler:   h,
		TLSConfig: tlsConf,
		ErrorLog:  slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	})
	s.Protocols = new(http.Protocols)
	s.Protocols.SetHTTP1(true) // HTTP/2 off
	return s
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
