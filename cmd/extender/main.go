// Command extender is petfabric's kube-scheduler extender. It keeps pods with Datera volumes
// off nodes whose node agent reports the volumes' iSCSI portals unreachable (or reports
// nothing, or stopped reporting), keeps a ReadWriteOnce volume from being attached to a
// second node while a live node still holds it, and ranks the remaining nodes.
//
// kube-scheduler configuration (names-only mode, the recommended one):
//
//	extenders:
//	- urlPrefix: https://petfabric-extender.<namespace>.svc:8443
//	  filterVerb: filter
//	  prioritizeVerb: prioritize
//	  weight: 1
//	  nodeCacheCapable: true
//	  ignorable: false
//	  tlsConfig: {caData: <CA of the serving certificate>, certData/keyData: <client pair when --client-ca-file is set>}
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/petfabric/petfabric/pkg/extender"
	"github.com/petfabric/petfabric/pkg/placement"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "extender:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("extender", flag.ContinueOnError)
	var (
		kubeconfig   = fs.String("kubeconfig", "", "kubeconfig file; empty means the in-cluster configuration")
		namespace    = fs.String("namespace", os.Getenv("POD_NAMESPACE"), "namespace of the node report Leases (default $POD_NAMESPACE)")
		listen       = fs.String("listen", ":8443", "HTTPS address kube-scheduler calls")
		healthListen = fs.String("health-listen", ":8080", "plain HTTP address for /healthz, /readyz and /metrics")
		certFile     = fs.String("tls-cert-file", "", "serving certificate (PEM); reloaded on change")
		keyFile      = fs.String("tls-key-file", "", "serving key (PEM); reloaded on change")
		clientCA     = fs.String("client-ca-file", "", "when set, require client certificates signed by this CA bundle (reloaded on change)")
		reload       = fs.Duration("cert-reload-interval", 10*time.Second, "how often the TLS files are checked for changes")
		maxBody      = fs.Int64("max-body-bytes", extender.DefaultMaxBodyBytes, "largest request body accepted (413 beyond)")
		policy       = fs.String("portal-policy", "all", "all: a node must reach every portal of a volume's backstore; any: one is enough")
		logLevel     = fs.String("log-level", "info", "debug, info, warn or error")
		// The extender's only apiserver traffic is three informers (claims, volumes, report
		// Leases): a LIST and a WATCH each at start and after a lost watch, and a re-WATCH
		// per informer every 5–10 minutes. Requests never call the apiserver. A burst of 10
		// starts or restarts all three at once; 5/s sustained is far above the steady state
		// and keeps a relist loop from hammering the apiserver.
		qps          = fs.Float64("kube-api-qps", 5, "client QPS towards the apiserver (informers' list/watch only: 3 LIST+WATCH at start, a re-watch per informer every 5–10 min)")
		burst        = fs.Int("kube-api-burst", 10, "client burst towards the apiserver (covers starting all three informers at once)")
		maxReportTTL = fs.Duration("max-report-ttl", placement.DefaultMaxReportTTL, "longest freshness a node report Lease may declare (leaseDurationSeconds); must exceed the agents' --ttl (default 4 × --interval = 40s)")
		readHeader   = fs.Duration("read-header-timeout", extender.DefaultAPITimeouts.ReadHeader, "HTTPS listener: time to read a request's headers")
		readTimeout  = fs.Duration("read-timeout", extender.DefaultAPITimeouts.Read, "HTTPS listener: time to read a whole request")
		writeTimeout = fs.Duration("write-timeout", extender.DefaultAPITimeouts.Write, "HTTPS listener: time from the end of the headers to the end of the answer; keep it ≥ the scheduler's extender httpTimeout")
		idleTimeout  = fs.Duration("idle-timeout", extender.DefaultAPITimeouts.Idle, "HTTPS listener: how long a kept-alive connection may wait for its next request")
	)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *qps <= 0 {
		return fmt.Errorf("--kube-api-qps %v: must be positive", *qps)
	}
	if *burst < 1 {
		return fmt.Errorf("--kube-api-burst %d: must be at least 1", *burst)
	}
	if *maxReportTTL < time.Second {
		return fmt.Errorf("--max-report-ttl %s: must be at least 1s (Lease durations are whole seconds)", *maxReportTTL)
	}
	for _, d := range []struct {
		flag string
		v    time.Duration
	}{{"--read-header-timeout", *readHeader}, {"--read-timeout", *readTimeout}, {"--write-timeout", *writeTimeout}, {"--idle-timeout", *idleTimeout}} {
		if d.v <= 0 {
			return fmt.Errorf("%s %s: must be positive", d.flag, d.v)
		}
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
	pp, err := placement.ParsePortalPolicy(*policy)
	if err != nil {
		return fmt.Errorf("--portal-policy: %w", err)
	}
	if *namespace == "" {
		return errors.New("--namespace (or $POD_NAMESPACE) is required: it holds the node report Leases")
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		return fmt.Errorf("kubernetes client configuration: %w", err)
	}
	cfg.QPS, cfg.Burst = float32(*qps), *burst
	cfg.UserAgent = "petfabric-extender"
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return extender.Run(ctx, client, extender.Config{
		Namespace: *namespace, Addr: *listen, HealthAddr: *healthListen,
		CertFile: *certFile, KeyFile: *keyFile, ClientCAFile: *clientCA, CertReloadInterval: *reload,
		MaxBodyBytes: *maxBody, PortalPolicy: pp, Log: log, MaxReportTTL: *maxReportTTL,
		APITimeouts: extender.Timeouts{ReadHeader: *readHeader, Read: *readTimeout, Write: *writeTimeout, Idle: *idleTimeout},
	})
}
