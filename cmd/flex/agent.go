package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/petfabric/petfabric/pkg/agent"
	"github.com/petfabric/petfabric/pkg/serving"
	"github.com/petfabric/petfabric/pkg/version"
)

// The agent mode runs in the node DaemonSet: it probes the iSCSI portals of the configured
// backstores and publishes the node's reachability report Lease (pkg/agent).
func init() {
	modes["agent"] = mode{summary: "node reachability agent (node DaemonSet)", run: runAgent}
}

func runAgent(args []string) int {
	if err := agentMain(args); err != nil {
		fmt.Fprintln(os.Stderr, "flex agent:", err)
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return serving.ExitCode(err)
	}
	return 0
}

func agentMain(args []string) (err error) {
	fs := flag.NewFlagSet("flex agent", flag.ContinueOnError)
	var (
		node          = fs.String("node", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME, from the downward API)")
		namespace     = fs.String("namespace", os.Getenv("POD_NAMESPACE"), "namespace of the report Leases (default $POD_NAMESPACE)")
		kubeconfig    = fs.String("kubeconfig", "", "kubeconfig file; empty means the in-cluster configuration")
		initiatorName = fs.String("initiator", "", "iSCSI initiator name; overrides --initiator-file")
		initiatorFile = fs.String("initiator-file", "/etc/iscsi/initiatorname.iscsi", "file with InitiatorName=<iqn>")
		backstores    = fs.String("backstores", "", "backstores file (YAML or JSON): backstoreServer → portals, discovery CHAP files (required)")
		stateDir      = fs.String("state-dir", envOr("PETFABRIC_FLEX_STATE_DIR", "/var/lib/petfabric/flex"), "the FlexVolume driver's state directory (<volumeID>.json per attached volume)")
		interval      = fs.Duration("interval", 10*time.Second, "time between probe rounds")
		jitter        = fs.Float64("jitter", 0.2, "each wait is stretched by up to this fraction of --interval")
		ttl           = fs.Duration("ttl", 0, "report freshness (Lease leaseDurationSeconds); default 4 × --interval; the extender caps it at its --max-report-ttl (default 2m)")
		probeTimeout  = fs.Duration("probe-timeout", 3*time.Second, "bound on one portal probe (connect to logout)")
		attachPoll    = fs.Duration("attach-poll", time.Second, "how often the state directory is re-read between rounds")
		metricsListen = fs.String("metrics-listen", ":9402", "plain HTTP address for /healthz and /metrics (empty: off)")
		logLevel      = fs.String("log-level", "info", "debug, info, warn or error")
		// One Lease update per round (0.1/s at the default 10s interval), one more when the
		// attached list changes (at most once per --attach-poll, 1/s), and a GET plus a
		// retried update on a conflict. 2/s sustains the worst of that; a burst of 5 covers
		// start-up (GET, CREATE) with a conflict retry without waiting. Thousands of agents
		// share one apiserver, so an agent must never be able to send more.
		qps   = fs.Float64("kube-api-qps", 2, "client QPS towards the apiserver (one Lease update per round, one per attached-list change)")
		burst = fs.Int("kube-api-burst", 5, "client burst towards the apiserver")
		check = fs.Bool("check", false, "check mode: validate the flags and the files they name (backstores, CHAP files, initiator name, kubeconfig) without contacting anything; exit 0, or print the problem and exit 2")
	)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return serving.Refuse(err)
	}
	if *check {
		// Check mode runs the start-up below up to its first network call: any refusal on
		// the way is a refused flag set (exit 2).
		defer func() { err = serving.Refuse(err) }()
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: lvl})).With("component", "agent")
	switch {
	case *node == "":
		return errors.New("--node (or $NODE_NAME) is required")
	case *namespace == "":
		return errors.New("--namespace (or $POD_NAMESPACE) is required")
	case *backstores == "":
		return errors.New("--backstores is required")
	case !(*qps > 0): // also refuses NaN
		return fmt.Errorf("--kube-api-qps %v: must be positive", *qps)
	case *burst < 1:
		return fmt.Errorf("--kube-api-burst %d: must be at least 1", *burst)
	}
	bs, err := agent.LoadBackstores(*backstores)
	if err != nil {
		return err
	}
	iqn := *initiatorName
	if iqn == "" {
		if iqn, err = agent.ReadInitiatorName(*initiatorFile); err != nil {
			return err
		}
	}
	if *check {
		return checkAgent(*kubeconfig, *metricsListen, agent.Options{
			Node: *node, Initiator: iqn, Backstores: bs, StateDir: *stateDir,
			Interval: *interval, Jitter: *jitter, TTL: *ttl, ProbeTimeout: *probeTimeout, AttachPoll: *attachPoll, Log: log,
		})
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		return fmt.Errorf("kubernetes client configuration: %w", err)
	}
	cfg.UserAgent = "petfabric-agent/" + *node
	cfg.QPS, cfg.Burst = float32(*qps), *burst
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return fmt.Errorf("kubernetes client: %w", err)
	}
	metrics := agentMetrics()
	a, err := agent.New(agent.Options{
		Node: *node, Initiator: iqn, Backstores: bs, StateDir: *stateDir,
		Leases:   client.CoordinationV1().Leases(*namespace),
		Interval: *interval, Jitter: *jitter, TTL: *ttl, ProbeTimeout: *probeTimeout, AttachPoll: *attachPoll,
		Log: log, Metrics: metrics,
	})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if *metricsListen != "" {
		srv := &http.Server{Addr: *metricsListen, Handler: agent.HealthHandler(a, metrics), ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics server stopped", "err", err)
				stop()
			}
		}()
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		}()
	}
	servers := make([]string, len(bs))
	for i, b := range bs {
		servers[i] = b.Server
	}
	log.Info("node agent starting", "node", *node, "namespace", *namespace, "initiator", iqn, "backstores", servers,
		"interval", *interval, "stateDir", *stateDir)
	return a.Run(ctx)
}

// checkAgent is the rest of the agent's check mode: the kubeconfig, the metrics address, the
// discovery CHAP files, and the options agent.New validates. agent.New needs a Lease client;
// it gets one for an address that does not resolve, and nothing ever runs, so nothing is
// contacted.
func checkAgent(kubeconfig, metricsListen string, opts agent.Options) error {
	if err := serving.CheckKubeconfig(kubeconfig); err != nil {
		return err
	}
	if metricsListen != "" {
		if _, _, err := net.SplitHostPort(metricsListen); err != nil {
			return fmt.Errorf("--metrics-listen %q: %w", metricsListen, err)
		}
	}
	for _, b := range opts.Backstores {
		if err := b.CHAP.Check(); err != nil {
			return fmt.Errorf("--backstores: backstore %s: discoveryCHAP: %w", b.Server, err)
		}
	}
	client, err := kubernetes.NewForConfig(&rest.Config{Host: "https://agent-check.invalid"})
	if err != nil {
		return err
	}
	opts.Leases = client.CoordinationV1().Leases("check")
	if _, err := agent.New(opts); err != nil {
		return err
	}
	fmt.Println("flex agent: check passed: the flags and the files they name are valid")
	return nil
}

// agentMetrics are the agent's metrics plus petfabric_build_info.
func agentMetrics() *agent.Metrics {
	m := agent.NewMetrics()
	m.Registry.MustRegister(version.NewCollector())
	return m
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
