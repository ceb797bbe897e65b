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
//
// When a node report recovers, the extender makes kube-scheduler retry the pods it rejected
// by patching the CSIStorageCapacity object --requeue-trigger-name in --namespace
// (pkg/extender/requeue.go). RBAC for that, in --namespace: create on csistoragecapacities,
// and patch on that one object by resourceNames. --requeue-trigger=false needs neither.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/petfabric/petfabric/pkg/extender"
	"github.com/petfabric/petfabric/pkg/placement"
	"github.com/petfabric/petfabric/pkg/serving"
	"github.com/petfabric/petfabric/pkg/version"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "extender:", err)
		os.Exit(serving.ExitCode(err))
	}
}

func run(args []string) (err error) {
	fs := flag.NewFlagSet("extender", flag.ContinueOnError)
	sc := serving.Config{Listen: ":8443", HealthListen: ":8080", ShutdownTimeout: 10 * time.Second}
	sc.AddFlags(fs)
	var (
		showVersion = fs.Bool("version", false, "print the version and exit")
		kubeconfig  = fs.String("kubeconfig", "", "kubeconfig file; empty means the in-cluster configuration")
		namespace   = fs.String("namespace", os.Getenv("POD_NAMESPACE"), "namespace of the node report Leases (default $POD_NAMESPACE)")
		maxBody     = fs.Int64("max-body-bytes", extender.DefaultMaxBodyBytes, "largest request body accepted (413 beyond)")
		policy      = fs.String("portal-policy", "all", "all: a node must reach every portal of a volume's backstore; any: one is enough")
		logLevel    = fs.String("log-level", "info", "debug, info, warn or error")
		// The extender's only apiserver traffic is three informers (claims, volumes, report
		// Leases): a LIST and a WATCH each at start and after a lost watch, and a re-WATCH
		// per informer every 5–10 minutes. Requests never call the apiserver. A burst of 10
		// starts or restarts all three at once; 5/s sustained is far above the steady state
		// and keeps a relist loop from hammering the apiserver.
		qps          = fs.Float64("kube-api-qps", 5, "client QPS towards the apiserver (informers' list/watch only: 3 LIST+WATCH at start, a re-watch per informer every 5–10 min)")
		burst        = fs.Int("kube-api-burst", 10, "client burst towards the apiserver (covers starting all three informers at once)")
		maxReportTTL = fs.Duration("max-report-ttl", placement.DefaultMaxReportTTL, "longest freshness a node report Lease may declare (leaseDurationSeconds); must exceed the agents' --ttl (default 4 × --interval = 40s)")
		// kube-scheduler does not watch Leases: without the trigger a pod rejected for a bad
		// report waits minutes after the report recovers (see pkg/extender/requeue.go).
		requeue         = fs.Bool("requeue-trigger", true, "when a node report recovers, patch a CSIStorageCapacity object in --namespace so kube-scheduler retries the pods it holds as unschedulable (needs create and patch on csistoragecapacities there)")
		requeueName     = fs.String("requeue-trigger-name", extender.DefaultRequeueObject, "name of the CSIStorageCapacity trigger object in --namespace")
		requeueCoalesce = fs.Duration("requeue-trigger-coalesce", extender.DefaultRequeueCoalesce, "how long recoveries are gathered into one trigger write")
		requeueInterval = fs.Duration("requeue-trigger-min-interval", extender.DefaultRequeueMinInterval, "least time between two trigger writes (the rate limit)")
	)
	check := fs.Bool("check", false, "check mode: validate the flags and the files they name (TLS pair, client CA, kubeconfig) without contacting anything; exit 0, or print the problem and exit 2")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return serving.Refuse(err)
	}
	if *check {
		// Check mode runs the start-up below up to its first network call: any refusal on
		// the way is a refused flag set (exit 2).
		defer func() { err = serving.Refuse(err) }()
	}
	if *showVersion {
		fmt.Println(version.String("extender"))
		return nil
	}
	if !(*qps > 0) { // also refuses NaN
		return fmt.Errorf("--kube-api-qps %v: must be positive", *qps)
	}
	if *burst < 1 {
		return fmt.Errorf("--kube-api-burst %d: must be at least 1", *burst)
	}
	if *maxReportTTL < time.Second {
		return fmt.Errorf("--max-report-ttl %s: must be at least 1s (Lease durations are whole seconds)", *maxReportTTL)
	}
	if *requeueCoalesce <= 0 || *requeueInterval <= 0 {
		return fmt.Errorf("--requeue-trigger-coalesce %s and --requeue-trigger-min-interval %s: must be positive", *requeueCoalesce, *requeueInterval)
	}
	if *requeue && *requeueName == "" {
		return errors.New("--requeue-trigger-name: must not be empty")
	}
	if err := sc.CheckFlags(); err != nil {
		return err
	}
	log, err := serving.NewLogger(*logLevel)
	if err != nil {
		return err
	}
	sc.Logger = log
	pp, err := placement.ParsePortalPolicy(*policy)
	if err != nil {
		return fmt.Errorf("--portal-policy: %w", err)
	}
	if *namespace == "" {
		return errors.New("--namespace (or $POD_NAMESPACE) is required: it holds the node report Leases")
	}
	if *check {
		if err := sc.CheckFiles(); err != nil {
			return err
		}
		if err := serving.CheckKubeconfig(*kubeconfig); err != nil {
			return err
		}
		fmt.Println("extender: check passed: the flags and the files they name are valid")
		return nil
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
		Serving: sc, Namespace: *namespace, MaxBodyBytes: *maxBody, PortalPolicy: pp, MaxReportTTL: *maxReportTTL,
		Requeue: extender.RequeueConfig{Enabled: *requeue, Name: *requeueName, Coalesce: *requeueCoalesce, MinInterval: *requeueInterval},
	})
}
