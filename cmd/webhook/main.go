// Command webhook is petfabric's mutating admission webhook: it pins Datera-bound claim
// templates of StatefulSets to a Datera StorageClass and pre-creates one FlexVolume
// PersistentVolume per ordinal (see ARCHITECTURE.md). Flags and wiring only; the logic is in
// pkg/webhook and pkg/mutate.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/petfabric/petfabric/pkg/mutate"
	"github.com/petfabric/petfabric/pkg/reconcile"
	"github.com/petfabric/petfabric/pkg/webhook"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "webhook:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("webhook", flag.ContinueOnError)
	var (
		kubeconfig   = fs.String("kubeconfig", "", "kubeconfig file (default: in-cluster configuration)")
		listen       = fs.String("listen", ":8443", "TLS address for admission reviews")
		healthListen = fs.String("health-listen", ":8080", "plain HTTP address for /healthz, /readyz and /metrics")
		certFile     = fs.String("tls-cert-file", "/etc/petfabric/tls/tls.crt", "serving certificate (reloaded when it changes)")
		keyFile      = fs.String("tls-key-file", "/etc/petfabric/tls/tls.key", "serving key")
		clientCA     = fs.String("client-ca-file", "", "if set, require client certificates signed by this CA")
		clusterID    = fs.String("cluster-id", "", "prefix of every Datera volume ID (letters, digits, _ . -)")
		defaultClass = fs.String("default-class", "", "Datera StorageClass for classless claim templates in namespaces labelled petfabric.io/inject=enabled")
		createBudget = fs.Duration("create-budget", 4*time.Second, "time an admission call may spend creating PVs (cut to the apiserver's timeout)")
		concurrency  = fs.Int("create-concurrency", 16, "PV creates in flight per admission call")
		logLevel     = fs.String("log-level", "info", "debug, info, warn or error")
		reconcileOn  = fs.Bool("reconcile", true, "run the leader-elected reconcile loop (missed ordinals, orphans, reclaim Delete)")
		leaseNS      = fs.String("lease-namespace", os.Getenv("POD_NAMESPACE"), "namespace of the reconcile loop's leader-election Lease")
		identity     = fs.String("identity", os.Getenv("POD_NAME"), "this replica's leader-election identity (default: host name)")
		orphanGrace  = fs.Duration("orphan-grace", 5*time.Minute, "how long an unbound petfabric PV may stay Available before the loop deletes it as an orphan")
		resync       = fs.Duration("resync", time.Minute, "how often the loop re-checks every StatefulSet and PV")
		dateraCA     = fs.String("datera-ca-file", "", "CA bundle to verify the Datera management API's TLS certificate")
		defaults     = keyValues{}
	)
	fs.Var(defaults, "default", "option default key=value (repeatable): replica, fsType, backstoreServer, secretName, secretNamespace, …")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := newLogger(*logLevel)
	if err != nil {
		return err
	}
	restCfg, err := loadConfig(*kubeconfig)
	if err != nil {
		return err
	}
	restCfg.UserAgent = "petfabric-webhook"
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	mutateCfg := mutate.Config{ClusterID: *clusterID, DefaultClass: *defaultClass, Defaults: defaults}
	reg := prometheus.NewRegistry()
	var background func(context.Context) error
	if *reconcileOn {
		if *identity == "" {
			if *identity, err = os.Hostname(); err != nil {
				return fmt.Errorf("--identity not set and no host name: %w", err)
			}
		}
		var caPEM []byte
		if *dateraCA != "" {
			if caPEM, err = os.ReadFile(*dateraCA); err != nil {
				return fmt.Errorf("--datera-ca-file: %w", err)
			}
		}
		loop, err := reconcile.New(reconcile.Options{
			Client: client, Mutate: mutateCfg,
			LeaseNamespace: *leaseNS, Identity: *identity,
			OrphanGrace: *orphanGrace, Resync: *resync,
			DateraCACertPEM: caPEM, Metrics: reg, Logger: log,
		})
		if err != nil {
			return fmt.Errorf("reconcile loop: %w", err)
		}
		background = loop.Run
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	return webhook.Run(ctx, client, webhook.RunConfig{
		Mutate:       mutateCfg,
		Registry:     reg,
		Background:   background,
		Listen:       *listen,
		HealthListen: *healthListen,
		CertFile:     *certFile,
		KeyFile:      *keyFile,
		ClientCAFile: *clientCA,
		CreateBudget: *createBudget,
		Concurrency:  *concurrency,
		Logger:       log,
	})
}

func loadConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
		if err != nil {
			return nil, fmt.Errorf("load kubeconfig %s: %w", kubeconfig, err)
		}
		return cfg, nil
	}
	cfg, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("in-cluster configuration (pass --kubeconfig outside a cluster): %w", err)
	}
	return cfg, nil
}

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", level, err)
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

// keyValues is a repeatable key=value flag.
type keyValues map[string]string

func (kv keyValues) String() string {
	var parts []string
	for k, v := range kv {
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, ",")
}

func (kv keyValues) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want key=value, got %q", s)
	}
	kv[k] = v
	return nil
}
