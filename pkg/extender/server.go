// Package extender is the HTTP side of petfabric's kube-scheduler extender: the informer
// cache of claims, volumes and node report Leases (Cache), the filter/prioritize handler
// (NewHandler, decisions in pkg/placement), metrics, and Run, which hands them to the
// serving scaffold (pkg/serving: HTTPS for the scheduler, /healthz, /readyz and /metrics on
// a plain listener, certificate reload and health, graceful shutdown).
package extender

import (
	"context"
	"errors"
	"fmt"
	"time"

	"k8s.io/client-go/kubernetes"

	"github.com/petfabric/petfabric/pkg/placement"
	"github.com/petfabric/petfabric/pkg/serving"
)

// Config configures Run.
type Config struct {
	// Serving is the listeners, TLS files, timeouts, shutdown bound and logger (the same
	// names and flags as the webhook's); Component and Registry are set by Run.
	Serving serving.Config
	// Namespace holds the nodes' report Leases (the release namespace).
	Namespace string
	// MaxBodyBytes bounds request bodies (default DefaultMaxBodyBytes).
	MaxBodyBytes int64
	// PortalPolicy is AllPortals (default) or AnyPortal.
	PortalPolicy placement.PortalPolicy
	// MaxReportTTL caps the freshness a node report Lease may declare
	// (default placement.DefaultMaxReportTTL).
	MaxReportTTL time.Duration
	// Requeue configures the requeue trigger (requeue.go): when Enabled, a node report
	// recovery makes the scheduler retry the pods it holds as unschedulable, within about a
	// second instead of minutes. Its Namespace defaults to Namespace.
	Requeue RequeueConfig
}

// RequeueConfig is the requeue trigger's part of Config.
type RequeueConfig struct {
	Enabled bool
	// Name of the CSIStorageCapacity object (default DefaultRequeueObject); Coalesce and
	// MinInterval as in RequeueOptions.
	Name                  string
	Coalesce, MinInterval time.Duration
}

// Run serves until ctx ends, then shuts down gracefully: /readyz turns 503 first, in-flight
// requests finish (within Serving.ShutdownTimeout), informers stop.
func Run(ctx context.Context, client kubernetes.Interface, cfg Config) error {
	if cfg.Namespace == "" {
		return errors.New("extender: the namespace of the node report Leases is required")
	}
	metrics := NewMetrics()
	sc := cfg.Serving
	sc.Component, sc.Registry = "extender", metrics.Registry
	srv, err := serving.New(sc)
	if err != nil {
		return err
	}
	log := srv.Logger()
	copts := CacheOptions{MaxReportTTL: cfg.MaxReportTTL}
	var requeuer *Requeuer
	if cfg.Requeue.Enabled {
		requeuer, err = NewRequeuer(client, RequeueOptions{
			Namespace: cfg.Namespace, Name: cfg.Requeue.Name, Coalesce: cfg.Requeue.Coalesce,
			MinInterval: cfg.Requeue.MinInterval, Log: log, Metrics: metrics,
		})
		if err != nil {
			return err
		}
		copts.OnReportImproved = requeuer.Notify
	}
	cache, err := NewCache(client, cfg.Namespace, log, copts)
	if err != nil {
		return fmt.Errorf("extender cache: %w", err)
	}
	metrics.RegisterReportStats(cache, time.Now)
	defer cache.Shutdown()
	return srv.Run(ctx, serving.App{
		Handler: NewHandler(cache, HandlerOptions{
			MaxBodyBytes: cfg.MaxBodyBytes, PortalPolicy: cfg.PortalPolicy, Log: log, Metrics: metrics,
		}),
		Start: func(ctx context.Context) error {
			cache.Start(ctx)
			return nil
		},
		Background: func(ctx context.Context) error {
			if requeuer != nil {
				requeuer.Run(ctx)
			}
			return nil
		},
		Ready: func() error {
			if !cache.Ready() {
				return errors.New("informer caches (claims, volumes, report Leases) not synced yet")
			}
			return nil
		},
	})
}
