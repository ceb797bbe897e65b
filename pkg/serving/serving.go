// Package serving is the one HTTPS serving scaffold of the webhook and the extender: the TLS
// listener the apiserver or kube-scheduler calls (certificates from pkg/servingtls, reloaded
// from files), a plain health listener with /healthz, /readyz and /metrics, listener timeouts,
// the certificate's health (an expiry gauge, and readiness that fails once changed files have
// not loaded for longer than a bound), the build-info metric, and the process lifecycle: start,
// background work, graceful shutdown, and stopping every server when anything fails to start.
//
// The programs keep only their handlers and wiring: they give Run an App (handler, start hook,
// readiness check, background loop).
package serving

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/petfabric/petfabric/pkg/servingtls"
	"github.com/petfabric/petfabric/pkg/version"
)

// Timeouts bound how long one client connection may hold a listener's goroutine and socket: a
// client that sends its headers or body a byte at a time, never reads the answer, or keeps an
// idle connection open, is cut off. Both programs are reachable by more than their one caller,
// and every open connection costs a goroutine and a descriptor.
type Timeouts struct {
	// ReadHeader bounds reading a request's headers.
	ReadHeader time.Duration
	// Read bounds reading a whole request, headers and body.
	Read time.Duration
	// Write bounds, from the end of the headers, reading the body, deciding and writing the
	// answer.
	Write time.Duration
	// Idle bounds the wait for the next request on a kept-alive connection.
	Idle time.Duration
}

// DefaultTimeouts suit the TLS listener of both programs. Their callers send a request's
// headers and body at once and give up after 30 s (the largest webhook timeoutSeconds;
// kube-scheduler's default extender httpTimeout). The largest requests, a 7 MiB admission
// review or full Node objects for 5,000 nodes (about 11 MB), are read and answered in about
// half a second on loopback; 30 s to read one leaves room for a slow network, and 40 s for the
// whole exchange outlasts the caller's own deadline. Both callers keep their connections alive
// between calls, so idle connections live 90 s.
var DefaultTimeouts = Timeouts{ReadHeader: 5 * time.Second, Read: 30 * time.Second, Write: 40 * time.Second, Idle: 90 * time.Second}

// DefaultHealthTimeouts suit kubelet probes and Prometheus scrapes: no request bodies, small
// answers.
var DefaultHealthTimeouts = Timeouts{ReadHeader: 5 * time.Second, Read: 10 * time.Second, Write: 10 * time.Second, Idle: time.Minute}

// durationField is a duration setting: its name, where it is, and its default.
type durationField struct {
	name string
	v    *time.Duration
	def  time.Duration
}

// fillDefaults sets each zero field to its default, in order, and returns the first negative
// field (nil when there is none).
func fillDefaults(fields ...durationField) *durationField {
	for i := range fields {
		switch f := &fields[i]; {
		case *f.v < 0:
			return f
		case *f.v == 0:
			*f.v = f.def
		}
	}
	return nil
}

// WithDefaults fills zero fields from def; a negative one is an error naming the field.
func (t Timeouts) WithDefaults(def Timeouts, what string) (Timeouts, error) {
	if f := fillDefaults(durationField{"ReadHeader", &t.ReadHeader, def.ReadHeader}, durationField{"Read", &t.Read, def.Read},
		durationField{"Write", &t.Write, def.Write}, durationField{"Idle", &t.Idle, def.Idle}); f != nil {
		return t, fmt.Errorf("%s.%s timeout %s is negative", what, f.name, *f.v)
	}
	return t, nil
}

// Apply sets the server's timeouts.
func (t Timeouts) Apply(s *http.Server) *http.Server {
	s.ReadHeaderTimeout, s.ReadTimeout, s.WriteTimeout, s.IdleTimeout = t.ReadHeader, t.Read, t.Write, t.Idle
	return s
}

// Defaults of Config.
const (
	DefaultCertReloadInterval = 10 * time.Second
	// DefaultCertFailureGrace: a certificate rotation writes the new pair within one kubelet
	// Secret sync (about a minute), and a half-written pair settles at the next poll. Files that
	// still do not load after 5 minutes are broken; the replica then reports not ready, so it
	// leaves the Service before its old certificate expires while it keeps serving it.
	DefaultCertFailureGrace = 5 * time.Minute
	DefaultShutdownTimeout  = 30 * time.Second
)

// Config is the scaffold's configuration; both programs use these names and the flags
// AddFlags declares for them.
type Config struct {
	// Component names the program in metric names (petfabric_<component>_certificate_reloads_total)
	// and logs: "webhook" or "extender".
	Component string
	// Listen is the TLS address (e.g. ":8443"); Listener, when set, is used instead (tests bind
	// 127.0.0.1:0 themselves).
	Listen   string
	Listener net.Listener
	// HealthListen serves /healthz, /readyz and /metrics over plain HTTP (e.g. ":8080");
	// HealthListener overrides it like Listener.
	HealthListen   string
	HealthListener net.Listener
	// CertFile and KeyFile are the serving pair; ClientCAFile, when set, makes client
	// certificates mandatory and verified against it. All are reloaded on change.
	CertFile, KeyFile, ClientCAFile string
	// CertReloadInterval is how often the TLS files are checked (DefaultCertReloadInterval).
	CertReloadInterval time.Duration
	// CertFailureGrace is how long changed TLS files may fail to load before /readyz fails
	// (DefaultCertFailureGrace).
	CertFailureGrace time.Duration
	// Timeouts bound the TLS listener's connections, HealthTimeouts the health listener's;
	// zero fields take DefaultTimeouts and DefaultHealthTimeouts.
	Timeouts, HealthTimeouts Timeouts
	// ShutdownTimeout bounds the graceful shutdown (DefaultShutdownTimeout).
	ShutdownTimeout time.Duration
	// Registry serves /metrics; the scaffold adds the Go, process, build-info and certificate
	// metrics to it. Nil: a new one.
	Registry *prometheus.Registry
	// Logger is the logger (slog.Default when nil).
	Logger *slog.Logger
}

// App is what a program serves.
type App struct {
	// Handler serves the TLS listener.
	Handler http.Handler
	// Start runs once both listeners serve (/readyz answers "starting" meanwhile), e.g. to start
	// informers and wait for their caches. An error stops both servers and Run returns it.
	Start func(ctx context.Context) error
	// Ready, when set, is asked on every /readyz after Start succeeded; an error is the 503's
	// body.
	Ready func() error
	// Background runs from Start's success until ctx ends (e.g. the reconcile loop). An error
	// stops the servers; on shutdown Run waits for it to return, within ShutdownTimeout.
	Background func(ctx context.Context) error
	// OnServing, when set, is called with both listeners' addresses once Start succeeded.
	OnServing func(addr, healthAddr string)
}

// Server is a configured scaffold; Run serves it once.
type Server struct {
	cfg   Config
	log   *slog.Logger
	certs *servingtls.CertReloader
	reg   *prometheus.Registry
	now   func() time.Time
}

// New checks cfg, loads the serving certificate and registers the scaffold's metrics.
func New(cfg Config) (*Server, error) {
	if cfg.Component == "" {
		return nil, errors.New("serving: Component is required")
	}
	if cfg.Listener == nil && cfg.Listen == "" {
		return nil, errors.New("serving: no TLS listen address")
	}
	if cfg.HealthListener == nil && cfg.HealthListen == "" {
		return nil, errors.New("serving: no health listen address")
	}
	var err error
	if cfg.Timeouts, err = cfg.Timeouts.WithDefaults(DefaultTimeouts, "Timeouts"); err != nil {
		return nil, fmt.Errorf("serving: %w", err)
	}
	if cfg.HealthTimeouts, err = cfg.HealthTimeouts.WithDefaults(DefaultHealthTimeouts, "HealthTimeouts"); err != nil {
		return nil, fmt.Errorf("serving: %w", err)
	}
	if d := fillDefaults(durationField{"CertReloadInterval", &cfg.CertReloadInterval, DefaultCertReloadInterval},
		durationField{"CertFailureGrace", &cfg.CertFailureGrace, DefaultCertFailureGrace},
		durationField{"ShutdownTimeout", &cfg.ShutdownTimeout, DefaultShutdownTimeout}); d != nil {
		return nil, fmt.Errorf("serving: %s %s is negative", d.name, *d.v)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	reg := cfg.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	reloads := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "petfabric_" + cfg.Component + "_certificate_reloads_total",
		Help: "Serving certificate and client CA reloads by result (success, error).",
	}, []string{"result"})
	reloads.WithLabelValues("success")
	reloads.WithLabelValues("error")
	certs, err := servingtls.NewCertReloader(cfg.CertFile, cfg.KeyFile, cfg.ClientCAFile, log, func(r string) { reloads.WithLabelValues(r).Inc() })
	if err != nil {
		return nil, fmt.Errorf("%s serving certificate: %w", cfg.Component, err)
	}
	expiry := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "petfabric_serving_certificate_expiry_timestamp_seconds",
		Help: "When the serving certificate in use expires (Unix seconds).",
	}, func() float64 { return float64(certs.Status().NotAfter.Unix()) })
	for _, c := range []prometheus.Collector{reloads, expiry, version.NewCollector(),
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("serving: register metrics: %w", err)
		}
	}
	cfg.Logger, cfg.Registry = log, reg
	return &Server{cfg: cfg, log: log, certs: certs, reg: reg, now: time.Now}, nil
}

// Logger is the configured logger (slog.Default when none was).
func (s *Server) Logger() *slog.Logger { return s.log }

// Registry is the registry /metrics serves.
func (s *Server) Registry() *prometheus.Registry { return s.reg }

// certReady fails once changed TLS files have not loaded for longer than CertFailureGrace.
func (s *Server) certReady() error {
	st := s.certs.Status()
	if st.FailingSince.IsZero() {
		return nil
	}
	if d := s.now().Sub(st.FailingSince); d > s.cfg.CertFailureGrace {
		return fmt.Errorf("serving certificate files have not loaded for %s (bound %s): %v", d.Round(time.Second), s.cfg.CertFailureGrace, st.Err)
	}
	return nil
}

// healthHandler serves /healthz (the process answers), /readyz (started, certificate files
// loadable, the app's check, not shutting down) and /metrics.
func (s *Server) healthHandler(started, stopping *atomic.Bool, ready func() error) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		var err error
		switch {
		case stopping.Load():
			err = errors.New("shutting down")
		case !started.Load():
			err = errors.New("starting: caches not synced yet")
		default:
			err = s.certReady()
			if err == nil && ready != nil {
				err = ready()
			}
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{Registry: s.reg}))
	return mux
}

func listen(l net.Listener, addr string) (net.Listener, error) {
	if l != nil {
		return l, nil
	}
	return net.Listen("tcp", addr)
}

// Run serves app until ctx ends, app.Start fails, a server fails or app.Background fails, then
// shuts down: /readyz turns 503, in-flight TLS requests finish (within ShutdownTimeout),
// Background and Start are cancelled and awaited, and the health server stops last. Every
// listener is closed when Run returns.
func (s *Server) Run(ctx context.Context, app App) error {
	if app.Handler == nil {
		return errors.New("serving: App.Handler is required")
	}
	cfg := s.cfg
	ln, err := listen(cfg.Listener, cfg.Listen)
	if err != nil {
		if cfg.HealthListener != nil {
			_ = cfg.HealthListener.Close()
		}
		return fmt.Errorf("%s TLS listener: %w", cfg.Component, err)
	}
	hln, err := listen(cfg.HealthListener, cfg.HealthListen)
	if err != nil {
		_ = ln.Close()
		return fmt.Errorf("%s health listener: %w", cfg.Component, err)
	}
	var started, stopping atomic.Bool
	errLog := slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)
	api := cfg.Timeouts.Apply(&http.Server{Handler: app.Handler, TLSConfig: s.certs.TLSConfig(), MaxHeaderBytes: 1 << 20, ErrorLog: errLog})
	api.Protocols = new(http.Protocols)
	api.Protocols.SetHTTP1(true) // HTTP/2 off: both callers speak HTTP/1.1
	health := cfg.HealthTimeouts.Apply(&http.Server{Handler: s.healthHandler(&started, &stopping, app.Ready), MaxHeaderBytes: 1 << 20, ErrorLog: errLog})

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 4)
	go s.certs.Run(runCtx, cfg.CertReloadInterval)
	go func() { errc <- serveErr("TLS", api.ServeTLS(ln, "", "")) }()
	go func() { errc <- serveErr("health", health.Serve(hln)) }()

	// Start, then Background, in one goroutine that Run awaits on shutdown.
	startErr := make(chan error, 1)
	work := make(chan struct{})
	go func() {
		defer close(work)
		if app.Start != nil {
			if err := app.Start(runCtx); err != nil {
				if runCtx.Err() == nil {
					startErr <- fmt.Errorf("%s start: %w", cfg.Component, err)
				}
				return
			}
		}
		if runCtx.Err() != nil {
			return
		}
		started.Store(true)
		s.log.Info(cfg.Component+" serving", "addr", ln.Addr().String(), "health", hln.Addr().String(), "version", version.Get())
		if app.OnServing != nil {
			app.OnServing(ln.Addr().String(), hln.Addr().String())
		}
		if app.Background != nil {
			if err := app.Background(runCtx); err != nil && runCtx.Err() == nil {
				errc <- fmt.Errorf("%s background: %w", cfg.Component, err)
			}
		}
	}()

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	case runErr = <-startErr:
	}
	stopping.Store(true)
	s.log.Info(cfg.Component+" shutting down", "err", runErr)
	sctx, scancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer scancel()
	if err := api.Shutdown(sctx); err != nil {
		runErr = errors.Join(runErr, fmt.Errorf("shutting down the TLS server: %w", err))
	}
	cancel() // stops Start and Background, e.g. after a server error
	// Wait for them, so e.g. the reconcile loop releases its leader lease before the process
	// exits and a successor takes over at once.
	select {
	case <-work:
	case <-sctx.Done():
		runErr = errors.Join(runErr, fmt.Errorf("%s: start or background work did not stop within %s", cfg.Component, cfg.ShutdownTimeout))
	}
	if err := health.Shutdown(sctx); err != nil {
		runErr = errors.Join(runErr, fmt.Errorf("shutting down the health server: %w", err))
		_ = health.Close()
	}
	s.log.Info(cfg.Component + " stopped")
	return runErr
}

func serveErr(what string, err error) error {
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("%s server: %w", what, err)
}
