// Command webhook is petfabric's mutating admission webhook: it pins Datera-bound claim
// templates of StatefulSets to a Datera StorageClass and pre-creates one FlexVolume
// PersistentVolume per ordinal (see ARCHITECTURE.md). Flags and wiring only; the logic is in
// pkg/webhook and pkg/mutate.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/petfabric/petfabric/pkg/cachetransform"
	"github.com/petfabric/petfabric/pkg/mutate"
	"github.com/petfabric/petfabric/pkg/pvoptions"
	"github.com/petfabric/petfabric/pkg/reconcile"
	"github.com/petfabric/petfabric/pkg/serving"
	"github.com/petfabric/petfabric/pkg/version"
	"github.com/petfabric/petfabric/pkg/webhook"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "webhook:", err)
		os.Exit(serving.ExitCode(err))
	}
}

func run(args []string) (err error) {
	fs := flag.NewFlagSet("webhook", flag.ContinueOnError)
	sc := serving.Config{
		Listen: ":8443", HealthListen: ":8080",
		CertFile: "/etc/petfabric/tls/tls.crt", KeyFile: "/etc/petfabric/tls/tls.key",
	}
	sc.AddFlags(fs)
	var (
		showVersion  = fs.Bool("version", false, "print the version and exit")
		kubeconfig   = fs.String("kubeconfig", "", "kubeconfig file (default: in-cluster configuration)")
		clusterID    = fs.String("cluster-id", "", "prefix of every Datera volume ID (letters, digits, _ . -); empty: derived from the kube-system namespace UID")
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
		maxOrdinals  = fs.Int("max-ordinals", mutate.DefaultMaxOrdinals, "per-StatefulSet ceiling on Datera-backed ordinals: StatefulSets reaching past it are denied, and no PV is made for an ordinal at or above it")
		apiQPS       = fs.Float64("kube-api-qps", DefaultKubeAPIQPS, "API requests per second of the admission path (PV creates, lookups)")
		apiBurst     = fs.Int("kube-api-burst", DefaultKubeAPIBurst, "API request burst of the admission path")
		loopQPS      = fs.Float64("reconcile-kube-api-qps", reconcile.DefaultKubeAPIQPS, "API requests per second of the reconcile loop (a client of its own; leader election has a third)")
		loopBurst    = fs.Int("reconcile-kube-api-burst", reconcile.DefaultKubeAPIBurst, "API request burst of the reconcile loop")
		fenceAfter   = fs.Duration("fence-after", reconcile.DefaultFenceAfter, "how long a node's report must have been seen unchanged before the loop may fence its initiator out of a ReadWriteOnce volume")
		reportNS     = fs.String("report-namespace", "", "namespace of the node agents' report Leases (default: --lease-namespace)")
		schedName    = fs.String("scheduler-name", "", "set spec.template.spec.schedulerName of every StatefulSet the webhook mutates to this scheduler (the secondary-scheduler mode) when the template names none or default-scheduler; a template naming another scheduler is left alone and logged. Empty: pod templates keep their scheduler")
		managedRes   = fs.String("managed-resource", "", "extended resource (e.g. petfabric.io/datera) the first container of every mutated StatefulSet's pod template requests and limits 1 of, unless the user set it; list it in the scheduler's extender managedResources with ignoredByScheduler: true. Empty: off")
		gateOn       = fs.Bool("scheduling-gate", true, "pod hook (/mutate/pods): gate a pet created while one of its petfabric claims is not Bound with the scheduling gate "+mutate.SchedulingGate+", which the reconcile loop removes once they all are (no FailedScheduling while the PV controller binds). Needs --reconcile; a cluster whose webhook configuration has no pod hook never sends a pod, so on is safe there")
		check        = fs.Bool("check", false, "check mode: validate the flags and the files they name (TLS pair, client CA, Datera CA, kubeconfig) without contacting anything; exit 0, or print the problem and exit 2")
		defaults     = keyValues{}
	)
	fs.Var(defaults, "default", "option default key=value (repeatable): replica, fsType, backstoreServer, secretName, secretNamespace, …")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return serving.Refuse(err)
	}
	if *showVersion {
		fmt.Println(version.String("webhook"))
		return nil
	}
	if *check {
		// Check mode runs the start-up below up to its first network call: any refusal on
		// the way is a refused flag set (exit 2).
		defer func() { err = serving.Refuse(err) }()
	}
	if err := checkFlags(*maxOrdinals, *apiQPS, *apiBurst, *loopQPS, *loopBurst); err != nil {
		return err
	}
	if err := sc.CheckFlags(); err != nil {
		return err
	}
	podTemplate := mutate.Config{SchedulerName: *schedName, ManagedResource: *managedRes}
	if err := podTemplate.ValidatePodTemplateSettings(); err != nil {
		return err
	}
	log, err := serving.NewLogger(*logLevel)
	if err != nil {
		return err
	}
	sc.Logger = log
	if *check {
		return checkFiles(&sc, *kubeconfig, *dateraCA, *clusterID, *reconcileOn, *leaseNS)
	}
	restCfg, err := loadConfig(*kubeconfig)
	if err != nil {
		return err
	}
	restCfg, loopCfg := clientConfigs(restCfg, *apiQPS, *apiBurst)
	client, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	id, err := resolveClusterID(ctx, client, *clusterID)
	if err != nil {
		return err
	}
	log.Info("cluster id", "clusterID", id, "derived", *clusterID == "")
	mutateCfg := mutate.Config{ClusterID: id, DefaultClass: *defaultClass, Defaults: defaults, MaxOrdinals: *maxOrdinals,
		SchedulerName: podTemplate.SchedulerName, ManagedResource: podTemplate.ManagedResource}
	sc.Registry = prometheus.NewRegistry()
	// One informer cache for the process: the admission path and the reconcile loop read the
	// same StatefulSets, PVs, classes and namespaces. Resynced at the loop's period (a resync
	// delivers to event handlers only; the admission path has none).
	factory := informers.NewSharedInformerFactoryWithOptions(client, *resync, cachetransform.Option())
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
			// A client of its own (built from KubeConfig with these limits, and another for
			// leader election), so admission creates, the loop and lease renewals never wait
			// on each other's rate limit.
			KubeConfig: loopCfg, KubeAPIQPS: float32(*loopQPS), KubeAPIBurst: *loopBurst,
			Mutate:         mutateCfg,
			LeaseNamespace: *leaseNS, Identity: *identity,
			OrphanGrace: *orphanGrace, Resync: *resync,
			FenceAfter: *fenceAfter, ReportNamespace: *reportNS,
			DateraCACertPEM: caPEM, Metrics: sc.Registry, Logger: log,
			SchedulingGate: *gateOn,
		})
		if err != nil {
			return fmt.Errorf("reconcile loop: %w", err)
		}
		if err := loop.UseInformers(factory); err != nil {
			return err
		}
		background = loop.Run
	} else if *gateOn {
		// Nothing would remove a gate: never add one.
		log.Info("scheduling gate off: it needs the reconcile loop (--reconcile) to remove it")
		*gateOn = false
	}
	return webhook.Run(ctx, client, webhook.RunConfig{
		Serving:        sc,
		Informers:      factory,
		Mutate:         mutateCfg,
		Background:     background,
		CreateBudget:   *createBudget,
		Concurrency:    *concurrency,
		SchedulingGate: *gateOn,
	})
}

// DefaultKubeAPIQPS and DefaultKubeAPIBurst size the admission path's client. A StatefulSet
// CREATE or scale-up makes up to --create-concurrency (16) PV creates at once and at most 512
// in one call; every PVC CREATE makes one. With burst 100 and 50/s, a call's default 4 s
// create budget fits about 300 creates (100 at once, then 50/s) — every PV of a typical
// StatefulSet inside its own admission call — and the rest are deferred to the PVC hook and
// the loop. client-go's default (5 QPS, burst 10) would defer all but about 30. 50/s is a
// small share of the apiserver's default 200 mutating requests in flight. The reconcile loop
// and leader election have clients of their own, so none of this traffic delays a lease
// renewal.
const (
	DefaultKubeAPIQPS   = 50
	DefaultKubeAPIBurst = 100
)

// clientConfigs splits the loaded configuration into the admission path's (with its QPS and
// burst) and a separate copy for the reconcile loop, which builds its own client, rate limiter
// and leader-election client from it: admission PV creates never spend the loop's or the
// lease renewals' budget.
func clientConfigs(base *rest.Config, qps float64, burst int) (admission, loop *rest.Config) {
	admission = rest.CopyConfig(base)
	admission.UserAgent = "petfabric-webhook"
	admission.QPS, admission.Burst = float32(qps), burst
	admission.RateLimiter = nil
	loop = rest.CopyConfig(base)
	loop.UserAgent = "petfabric-webhook-reconcile"
	loop.RateLimiter = nil
	return admission, loop
}

// checkFlags rejects limits that cannot work, naming the flag.
func checkFlags(maxOrdinals int, apiQPS float64, apiBurst int, loopQPS float64, loopBurst int) error {
	if maxOrdinals < 1 {
		return fmt.Errorf("--max-ordinals %d: want at least 1", maxOrdinals)
	}
	for _, f := range []struct {
		name  string
		qps   float64
		burst int
	}{{"kube-api", apiQPS, apiBurst}, {"reconcile-kube-api", loopQPS, loopBurst}} {
		if !(f.qps > 0) {
			return fmt.Errorf("--%s-qps %v: want a positive number of requests per second", f.name, f.qps)
		}
		if f.burst < 1 {
			return fmt.Errorf("--%s-burst %d: want at least 1", f.name, f.burst)
		}
	}
	return nil
}

// checkFiles is the rest of the check mode: the files the start-up and the reconcile loop read,
// and what they would refuse after contacting the apiserver.
func checkFiles(sc *serving.Config, kubeconfig, dateraCA, clusterID string, reconcileOn bool, leaseNS string) error {
	if err := sc.CheckFiles(); err != nil {
		return err
	}
	if err := serving.CheckCAFile("--datera-ca-file", dateraCA); err != nil {
		return err
	}
	if err := serving.CheckKubeconfig(kubeconfig); err != nil {
		return err
	}
	if clusterID != "" {
		if _, err := mutate.VolumeID(clusterID, "ns", "claim"); err != nil {
			return fmt.Errorf("--cluster-id: %w", err)
		}
	}
	if reconcileOn && leaseNS == "" {
		return errors.New("--lease-namespace (or $POD_NAMESPACE) is required with --reconcile: it holds the loop's leader-election Lease")
	}
	fmt.Println("webhook: check passed: the flags and the files they name are valid")
	return nil
}

// resolveClusterID returns the --cluster-id, or, when it is empty, one derived from the UID of
// the kube-system namespace: unique and stable for the cluster's life, so two clusters sharing
// a Datera backstore never map their claims to the same volume. (RBAC: get on the namespace
// kube-system.)
func resolveClusterID(ctx context.Context, client kubernetes.Interface, flagValue string) (string, error) {
	if flagValue != "" {
		if _, err := mutate.VolumeID(flagValue, "ns", "claim"); err != nil {
			return "", fmt.Errorf("--cluster-id: %w", err)
		}
		return flagValue, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	ns, err := client.CoreV1().Namespaces().Get(ctx, metav1.NamespaceSystem, metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("--cluster-id is empty, and the kube-system namespace to derive it from could not be read (the webhook needs get on namespaces/kube-system): %w", err)
	}
	id, err := pvoptions.DefaultClusterID(string(ns.UID))
	if err != nil {
		return "", fmt.Errorf("derive --cluster-id: %w", err)
	}
	return id, nil
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
