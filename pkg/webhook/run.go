package webhook

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
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/petfabric/petfabric/pkg/mutate"
	"github.com/petfabric/petfabric/pkg/servingtls"
)

// RunConfig is the webhook process's configuration (cmd/webhook fills it from flags).
type RunConfig struct {
	Mutate       mutate.Config
	Listen       string // TLS listener for the apiserver, e.g. ":8443"
	HealthListen string // plain HTTP: /healthz, /readyz, /metrics
	CertFile     string
	KeyFile      string
	ClientCAFile string // optional: require apiserver client certificates
	CertReload   time.Duration
	CreateBudget time.Duration
	Concurrency  int
	// ShutdownGrace bounds graceful shutdown after ctx ends.
	ShutdownGrace time.Duration
	// Timeouts of both listeners (zero: the Default* values). A client that sends its headers
	// or body slowly, or holds an idle connection, is cut off: the webhook is reachable by
	// more than the apiserver, and every open connection costs a goroutine and a descriptor.
	ReadHeaderTimeout time.Duration
	ReadTimeout       time.Duration
	WriteTimeout      time.Duration
	IdleTimeout       time.Duration
	// Recorder receives the webhook's Events; nil: a broadcaster writing them through client.
	Recorder record.EventRecorder
	// Background runs next to the servers once caches synced (the reconcile loop); nil: none.
	Background func(ctx context.Context) error
	// Registry serves /metrics; share it with Background's metrics. Nil: a new one.
	Registry *prometheus.Registry
	Logger   *slog.Logger
	// Ready, if set, is called with the listeners' addresses once serving (tests use it).
	Ready func(tlsAddr, healthAddr string)
}

// Default listener timeouts. The apiserver sends a review's headers and body at once and waits
// at most 30 s (the largest webhook timeoutSeconds) for the answer, so: 5 s for the headers,
// 15 s for headers and body (a 7 MiB review on a slow link), 40 s for the whole exchange (the
// handler's work is bounded by the apiserver's timeout, see budget), and 30 s of idle
// keep-alive before the connection is closed (the apiserver reconnects when it needs to).
const (
	DefaultReadHeaderTimeout = 5 * time.Second
	DefaultReadTimeout       = 15 * time.Second
	DefaultWriteTimeout      = 40 * time.Second
	DefaultIdleTimeout       = 30 * time.Second
)

// Run serves admission reviews over TLS and health/metrics over plain HTTP until ctx ends.
func Run(ctx context.Context, client kubernetes.Interface, cfg RunConfig) error {
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	if cfg.ShutdownGrace == 0 {
		cfg.ShutdownGrace = 30 * time.Second
	}
	if cfg.CertReload == 0 {
		cfg.CertReload = 10 * time.Second
	}
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&cfg.ReadHeaderTimeout, DefaultReadHeaderTimeout}, {&cfg.ReadTimeout, DefaultReadTimeout}, {&cfg.WriteTimeout, DefaultWriteTimeout}, {&cfg.IdleTimeout, DefaultIdleTimeout}} {
		if *d.v <= 0 {
			*d.v = d.def
		}
	}
	reg := cfg.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reloads := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "petfabric_webhook_certificate_reloads_total", Help: "Serving certificate reloads by result.",
	}, []string{"result"})
	reg.MustRegister(reloads)

	certs, err := servingtls.NewCertReloader(cfg.CertFile, cfg.KeyFile, cfg.ClientCAFile, log, func(r string) { reloads.WithLabelValues(r).Inc() })
	if err != nil {
		return fmt.Errorf("serving certificate: %w", err)
	}
	factory := informers.NewSharedInformerFactory(client, 10*time.Minute)
	lookup, err := NewClusterLookup(client, factory)
	if err != nil {
		return err
	}
	recorder := cfg.Recorder
	if recorder == nil {
		broadcaster := record.NewBroadcaster()
		broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
		defer broadcaster.Shutdown()
		recorder = broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "petfabric-webhook"})
	}
	srv := New(Options{
		Mutate: cfg.Mutate, Lookup: lookup, PVs: APIPVStore{Client: client},
		CreateBudget: cfg.CreateBudget, Concurrency: cfg.Concurrency, Logger: log, Registerer: reg, Recorder: recorder,
	})

	tlsLn, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen for admission reviews on %s: %w", cfg.Listen, err)
	}
	healthLn, err := net.Listen("tcp", cfg.HealthListen)
	if err != nil {
		tlsLn.Close()
		return fmt.Errorf("listen for health on %s: %w", cfg.HealthListen, err)
	}

	var stopping atomic.Bool
	health := chi.NewRouter()
	health.Get("/healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	health.Get("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		switch {
		case stopping.Load():
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
		case !lookup.Synced():
			http.Error(w, "informer caches not synced", http.StatusServiceUnavailable)
		default:
			_, _ = w.Write([]byte("ok\n"))
		}
	})
	health.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))

	admission := &http.Server{
		Handler:           srv.Handler(),
		TLSConfig:         certs.TLSConfig(),
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    1 << 20,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	healthSrv := &http.Server{
		Handler:           health,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    1 << 20,
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, 4)
	go certs.Run(ctx, cfg.CertReload)
	go func() { errs <- serveErr("admission", admission.ServeTLS(tlsLn, "", "")) }()
	go func() { errs <- serveErr("health", healthSrv.Serve(healthLn)) }()

	factory.Start(ctx.Done())
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok && ctx.Err() == nil {
			return fmt.Errorf("informer cache for %v did not sync", typ)
		}
	}
	log.Info("webhook serving", "admission", tlsLn.Addr().String(), "health", healthLn.Addr().String())
	if cfg.Ready != nil {
		cfg.Ready(tlsLn.Addr().String(), healthLn.Addr().String())
	}
	background := make(chan struct{})
	if cfg.Background != nil {
		go func() {
			defer close(background)
			if err := cfg.Background(ctx); err != nil && ctx.Err() == nil {
				errs <- fmt.Errorf("reconcile loop: %w", err)
			}
		}()
	} else {
		close(background)
	}

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errs:
	}
	stopping.Store(true)
	log.Info("webhook shutting down")
	shutdownCtx, stop := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	defer stop()
	if err := admission.Shutdown(shutdownCtx); err != nil {
		runErr = errors.Join(runErr, fmt.Errorf("admission server shutdown: %w", err))
	}
	cancel() // stops Background too, e.g. after a server error
	// Wait for the loop to release its leader lease, so a successor takes over at once.
	select {
	case <-background:
	case <-shutdownCtx.Done():
		runErr = errors.Join(runErr, errors.New("reconcile loop did not stop within the shutdown grace period"))
	}
	_ = healthSrv.Shutdown(shutdownCtx)
	return runErr
}

func serveErr(what string, err error) error {
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("%s server: %w", what, err)
}
