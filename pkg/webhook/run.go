package webhook

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"

	"github.com/petfabric/petfabric/pkg/cachetransform"
	"github.com/petfabric/petfabric/pkg/mutate"
	"github.com/petfabric/petfabric/pkg/serving"
)

// RunConfig is the webhook process's configuration (cmd/webhook fills it from flags).
type RunConfig struct {
	// Serving is the listeners, TLS files, timeouts, shutdown bound, logger and metrics registry
	// (the same names and flags as the extender's; share Registry with Background's metrics).
	// Run sets Component.
	Serving      serving.Config
	Mutate       mutate.Config
	CreateBudget time.Duration
	Concurrency  int
	// Recorder receives the webhook's Events; nil: a broadcaster writing them through client.
	Recorder record.EventRecorder
	// Background runs next to the servers once caches synced (the reconcile loop); nil: none.
	Background func(ctx context.Context) error
	// OnServing, if set, is called with the listeners' addresses once serving (tests use it).
	OnServing func(addr, healthAddr string)
	// Informers is the process's one informer factory, shared with Background (the reconcile
	// loop registers its informers on it first, reconcile.UseInformers); Run starts it for the
	// process's life. Nil: a factory of its own. Either way managed fields are stripped
	// (cachetransform) when the factory is built with cachetransform.Option, as cmd/webhook does.
	Informers informers.SharedInformerFactory
	// SchedulingGate turns the pod hook's gating on (Options.SchedulingGate); it reads claims
	// from the factory's claim informer. Only useful with a Background loop that removes gates.
	SchedulingGate bool
}

// Run serves admission reviews over TLS and health/metrics over plain HTTP until ctx ends.
// The informer caches sync after the listeners open (/readyz says so meanwhile); if they
// cannot sync, or the reconcile loop fails, both servers stop and Run returns the error.
func Run(ctx context.Context, client kubernetes.Interface, cfg RunConfig) error {
	sc := cfg.Serving
	sc.Component = "webhook"
	srv, err := serving.New(sc)
	if err != nil {
		return err
	}
	log := srv.Logger()
	factory := cfg.Informers
	if factory == nil {
		factory = informers.NewSharedInformerFactoryWithOptions(client, 10*time.Minute, cachetransform.Option())
	}
	lookup, err := NewClusterLookup(client, factory)
	if err != nil {
		return err
	}
	var claims ClaimGetter
	if cfg.SchedulingGate {
		claims = lookup.WithClaims(factory)
	}
	recorder := cfg.Recorder
	if recorder == nil {
		broadcaster := record.NewBroadcaster()
		broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
		defer broadcaster.Shutdown()
		recorder = broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "petfabric-webhook"})
	}
	admission := New(Options{
		Mutate: cfg.Mutate, Lookup: lookup, PVs: APIPVStore{Client: client},
		CreateBudget: cfg.CreateBudget, Concurrency: cfg.Concurrency, Logger: log, Registerer: srv.Registry(), Recorder: recorder,
		SchedulingGate: cfg.SchedulingGate, Claims: claims,
	})
	var background func(context.Context) error
	if cfg.Background != nil {
		background = func(ctx context.Context) error {
			if err := cfg.Background(ctx); err != nil {
				return fmt.Errorf("reconcile loop: %w", err)
			}
			return nil
		}
	}
	defer factory.Shutdown()
	return srv.Run(ctx, serving.App{
		Handler: admission.Handler(),
		Start: func(ctx context.Context) error {
			factory.Start(ctx.Done())
			for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
				if !ok && ctx.Err() == nil {
					return fmt.Errorf("informer cache for %v did not sync", typ)
				}
			}
			return nil
		},
		Ready: func() error {
			if !lookup.Synced() {
				return errors.New("informer caches not synced")
			}
			return nil
		},
		Background: background,
		OnServing:  cfg.OnServing,
	})
}
