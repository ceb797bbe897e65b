// Package product runs the whole product on this machine, as `make demo` shows it and the
// walkthrough e2e tests it: a test/cluster control plane with three real kubelet nodes (fake
// CRI: no container runs, kubelet mounts every volume through the driver), the Datera
// simulator exporting real tgtd targets, and petfabric installed with its chart (`helm
// install` of charts/petfabric). The webhook, the extender and one node agent per node run as
// host processes configured from the installed rendering: their arguments are the rendered
// containers' arguments with only paths and addresses changed, and each runs with a token of
// the ServiceAccount the chart gives it. The harness's kube-scheduler runs with the chart's
// scheduler configuration. Two nodes reach tgtd's portal; the third is given the portal at an
// address that does not route (see UnreachablePortal), so its agent's probes really fail.
//
// Steps (steps.go) replay the 2016 Datera/PetSet blog walkthrough against an Env and return
// what they observed; the demo prints them, the e2e asserts on them.
package product

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/mount-utils"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/internal/testpki"
	"github.com/petfabric/petfabric/pkg/datera/fake"
	"github.com/petfabric/petfabric/pkg/flex"
	"github.com/petfabric/petfabric/pkg/flex/flextest"
	"github.com/petfabric/petfabric/pkg/mutate"
	"github.com/petfabric/petfabric/pkg/placement"
	"github.com/petfabric/petfabric/test/cluster"
)

const (
	// CredentialsSecret holds the Datera login every class names (type datera/iscsi: kubelet
	// hands a FlexVolume driver only secrets of its own type).
	CredentialsSecret = "datera-creds"
	// DateraUser and DateraPassword are the simulator's user.
	DateraUser     = "demo"
	DateraPassword = "Demo_Pets.2016"
	// UnreachablePortal is how the third node is given tgtd's portal: an address of
	// TEST-NET-2 (RFC 5737), which this host routes to its default gateway and nobody answers,
	// as a node on a network without a route to the storage network sees the portal. Its
	// agent's probes time out; the extender keeps pets off the node.
	UnreachablePortal = "198.51.100.7:3260"
	// PortalTarget is the one tgtd target the simulator did not make (see startBackstore).
	PortalTarget = "iqn.2016-11.io.petfabric:portal"
	// PluginDir is kubelet's directory name for the FlexVolume driver datera/iscsi.
	PluginDir = "datera~iscsi"
)

// Options tune Start.
type Options struct {
	// Dir holds everything (logs, kubeconfig, state); a new directory under the temp dir when
	// empty. Close removes it unless KeepDir.
	Dir     string
	KeepDir bool
	// BinDir receives the built webhook, extender and driver (default: <Dir>/bin). Builds go
	// through Go's build cache, so a warm build is a link.
	BinDir string
	// Logf receives progress lines (nil: silent).
	Logf func(format string, args ...any)
}

// Node is one kubelet node and its driver and agent.
type Node struct {
	Name      string
	Reachable bool   // its agent is given tgtd's portal (false: UnreachablePortal)
	Initiator string // its iSCSI initiator name
	Root      string // the driver's directories
	Config    string // the driver's node config file (kubelet hands its path to the driver)
	StateDir  string
	LogFile   string // the driver's log
	Kubelet   *cluster.Kubelet
	agent     *proc
}

// Env is the running product.
type Env struct {
	Dir        string
	Kubeconfig string // cluster-admin, for kubectl
	Cluster    *cluster.Cluster
	Client     kubernetes.Interface
	Nodes      []*Node
	// Sim is the Datera simulator; SimURL its API at Backstore (http), which the classes name.
	Sim       *fake.Server
	SimURL    string
	Backstore string
	// Portal is tgtd's iSCSI portal (ip:port); TgtControlPort its tgtadm control port.
	Portal         string
	TgtControlPort int
	// Manifest is the installed release's manifest (helm get manifest); SchedulerConfig the
	// scheduler configuration the harness's kube-scheduler runs with.
	Manifest        string
	SchedulerConfig string
	// Timings of the start-up phases, in order.
	Timings []Timing

	opts           Options
	bins           cluster.Binaries
	exp            *exporter
	tgtd           *proc
	simSrv         *http.Server
	extenderPort   int
	extenderHealth int
	routeAdded     bool

	mu        sync.Mutex
	procs     []*proc
	closeOnce sync.Once
	closeErr  error
}

// Timing is how long one start-up phase took.
type Timing struct {
	Phase string
	Took  time.Duration
}

func (e *Env) logf(format string, args ...any) {
	if e.opts.Logf != nil {
		e.opts.Logf(format, args...)
	}
}

// LogPath is where the host process name logs.
func (e *Env) LogPath(name string) string { return filepath.Join(e.Dir, "logs", name+".log") }

func (e *Env) targetsDir() string { return filepath.Join(e.Dir, "targets") }

// Node returns the node called name (nil if none).
func (e *Env) Node(name string) *Node {
	for _, n := range e.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// Start builds the programs and starts everything; on error nothing is left running. The
// caller must Close the Env.
func Start(ctx context.Context, opts Options) (_ *Env, err error) {
	e := &Env{opts: opts, Dir: opts.Dir}
	if e.Dir == "" {
		if e.Dir, err = os.MkdirTemp("", "petfabric-product-"); err != nil {
			return nil, err
		}
	}
	defer func() {
		if err != nil {
			if cerr := e.Close(); cerr != nil {
				err = errors.Join(err, fmt.Errorf("cleaning up: %w", cerr))
			}
		}
	}()
	for _, d := range []string{"logs", "bin", "pki", "helm", "host"} {
		if err := os.MkdirAll(filepath.Join(e.Dir, d), 0o755); err != nil {
			return e, err
		}
	}
	if e.bins, err = cluster.DefaultBinaries(); err != nil {
		return e, err
	}
	phase := func(name string, began time.Time) {
		took := time.Since(began)
		e.Timings = append(e.Timings, Timing{Phase: name, Took: took})
		e.logf("%s (%s)", name, took.Round(100*time.Millisecond))
	}

	began := time.Now()
	bins, err := e.build(ctx)
	if err != nil {
		return e, err
	}
	phase("built webhook, extender and the FlexVolume driver", began)

	began = time.Now()
	if err := e.startBackstore(ctx); err != nil {
		return e, err
	}
	phase(fmt.Sprintf("Datera simulator on %s exporting through tgtd (portal %s, control port %d)", e.Backstore, e.Portal, e.TgtControlPort), began)

	began = time.Now()
	ca, err := testpki.NewCA("petfabric-demo-ca")
	if err != nil {
		return e, err
	}
	webhookPort, err := freePort()
	if err != nil {
		return e, err
	}
	if e.extenderPort, err = freePort(); err != nil {
		return e, err
	}
	if e.extenderHealth, err = freePort(); err != nil {
		return e, err
	}
	values := e.chartValues(fmt.Sprintf("https://127.0.0.1:%d", webhookPort), ca.CertPEM)
	valuesFile := filepath.Join(e.Dir, "helm", "values.yaml")
	if err := writeValues(valuesFile, values); err != nil {
		return e, err
	}
	kubeVersion, err := cluster.LoadVersions()
	if err != nil {
		return e, err
	}
	tmplArgs := []string{"template", Release, filepath.Join(repoRoot(), "charts", "petfabric"), "--namespace", Namespace,
		"--kube-version", kubeVersion["K8S_VERSION"]}
	rendered, err := e.helm(ctx, valuesFile, tmplArgs...)
	if err != nil {
		return e, err
	}
	objs, err := parseManifest(rendered)
	if err != nil {
		return e, err
	}
	sched, schedText, err := schedulerConfig(objs)
	if err != nil {
		return e, err
	}
	e.SchedulerConfig = schedText
	phase("rendered charts/petfabric for this machine (helm template: the scheduler configuration)", began)

	began = time.Now()
	nodeCM, err := nodeConfigMap(objs)
	if err != nil {
		return e, err
	}
	var specs []cluster.KubeletSpec
	for i, reach := range []bool{true, true, false} {
		n, err := e.newNode(fmt.Sprintf("node-%d", i), reach, nodeCM)
		if err != nil {
			return e, err
		}
		e.Nodes = append(e.Nodes, n)
		specs = append(specs, cluster.KubeletSpec{Name: n.Name, FlexDriver: bins.flex,
			Env: []string{flex.EnvConfig + "=" + n.Config, flex.EnvStateDir + "=" + n.StateDir}})
	}
	e.logf("starting the control plane and 3 kubelet nodes (waits while another test's kubelets hold this host)")
	e.Cluster, err = cluster.New(ctx, cluster.Options{Dir: filepath.Join(e.Dir, "cluster"), Scheduler: sched,
		Kubelets: specs, Logf: e.opts.Logf, StartTimeout: 3 * time.Minute})
	if err != nil {
		return e, fmt.Errorf("control plane: %w", err)
	}
	e.Kubeconfig, e.Client = e.Cluster.Kubeconfig, e.Cluster.Client
	for i, k := range e.Cluster.Kubelets {
		e.Nodes[i].Kubelet = k
	}
	phase("control plane with 3 kubelet nodes (kube-scheduler runs the chart's scheduler configuration)", began)

	began = time.Now()
	if err := e.install(ctx, valuesFile); err != nil {
		return e, err
	}
	phase("helm install petfabric", began)

	began = time.Now()
	if err := e.startPrograms(ctx, ca, webhookPort, tmplArgs, valuesFile); err != nil {
		return e, err
	}
	phase("webhook, extender and 3 node agents running as host processes from the installed rendering", began)
	return e, nil
}

type builtBinaries struct{ webhook, extender, flex string }

// build builds the three programs; the driver with the loop-device initiator stand-in.
func (e *Env) build(ctx context.Context) (builtBinaries, error) {
	dir := e.opts.BinDir
	if dir == "" {
		dir = filepath.Join(e.Dir, "bin")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return builtBinaries{}, err
	}
	b := builtBinaries{webhook: filepath.Join(dir, "webhook"), extender: filepath.Join(dir, "extender"), flex: filepath.Join(dir, "flex")}
	for _, args := range [][]string{
		{"build", "-o", dir + "/", "./cmd/webhook", "./cmd/extender"},
		{"build", "-tags", "petfabric_standin", "-o", b.flex, "./cmd/flex"},
	} {
		cmd := exec.CommandContext(ctx, "go", args...)
		cmd.Dir = repoRoot()
		if out, err := cmd.CombinedOutput(); err != nil {
			return b, fmt.Errorf("go %s: %w: %s", strings.Join(args, " "), err, out)
		}
	}
	return b, nil
}

// startBackstore starts tgtd, and the simulator on port 7717 (Datera's http port) of a
// loopback address of its own.
func (e *Env) startBackstore(ctx context.Context) error {
	var err error
	if e.TgtControlPort, err = pickTgtPort(); err != nil {
		return err
	}
	portalL, err := loopbackAddr(78, 0)
	if err != nil {
		return err
	}
	e.Portal = portalL.Addr().String()
	portalL.Close()
	if err := e.startTgtd(ctx, e.TgtControlPort, e.Portal); err != nil {
		return err
	}
	// tgtd refuses discovery logins while it exports no target, where a Datera portal answers
	// with an empty list: a target with no LUN and an ACL nobody matches keeps it answering.
	if out, err := exec.CommandContext(ctx, "tgtadm", "-C", strconv.Itoa(e.TgtControlPort), "--lld", "iscsi", "--mode", "target",
		"--op", "new", "--tid", "1", "--targetname", PortalTarget).CombinedOutput(); err != nil {
		return fmt.Errorf("tgtd placeholder target: %w: %s", err, out)
	}
	loop := &flextest.LoopTargets{Dir: e.targetsDir()}
	tgt, err := fake.NewTgtExporter(ctx, fake.TgtOptions{ControlPort: e.TgtControlPort, BackingDir: filepath.Join(e.targetsDir(), "backing")})
	if err != nil {
		return err
	}
	e.exp = &exporter{tgt: tgt, loop: loop}
	if e.Sim, err = fake.New(fake.Options{Users: map[string]string{DateraUser: DateraPassword}, Portals: []string{e.Portal}, Exporter: e.exp}); err != nil {
		return err
	}
	l, err := loopbackAddr(77, 7717)
	if err != nil {
		return err
	}
	e.Backstore = l.Addr().String()
	e.SimURL = "http://" + e.Backstore
	e.simSrv = &http.Server{Handler: e.Sim, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = e.simSrv.Serve(l) }()
	return nil
}

// nodeConfigMap returns the rendered node ConfigMap's driver config and backstores file.
func nodeConfigMap(objs []manifestObject) (map[string]string, error) {
	var cm corev1.ConfigMap
	if err := findObject(objs, "ConfigMap", Release+"-node", &cm); err != nil {
		return nil, err
	}
	if cm.Data["flex.json"] == "" || cm.Data["backstores.json"] == "" {
		return nil, errors.New("the node ConfigMap lacks flex.json or backstores.json")
	}
	return cm.Data, nil
}

// newNode lays out a node's driver directories: its node config is the rendered flex.json
// with the paths of this node, its backstores file the rendered one (the unreachable node's
// portal rewritten to UnreachablePortal).
func (e *Env) newNode(name string, reachable bool, cm map[string]string) (*Node, error) {
	root := filepath.Join(e.Dir, "nodes", name)
	n := &Node{Name: name, Reachable: reachable, Root: root, Initiator: "iqn.1993-08.org.debian:01:" + name,
		Config: filepath.Join(root, "flex.json"), StateDir: filepath.Join(root, "state"), LogFile: filepath.Join(root, "log", "flex.log")}
	for _, d := range []string{"state", "global", "log", "src", "iscsi", "sys"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(filepath.Join(root, "iscsi", "initiatorname.iscsi"), []byte("InitiatorName="+n.Initiator+"\n"), 0o644); err != nil {
		return nil, err
	}
	var cfg map[string]any
	if err := json.Unmarshal([]byte(cm["flex.json"]), &cfg); err != nil {
		return nil, fmt.Errorf("rendered flex.json: %w", err)
	}
	for k, v := range map[string]string{"nodeName": name, "stateDir": n.StateDir,
		"initiatorNameFile": filepath.Join(root, "iscsi", "initiatorname.iscsi"), "globalMountDir": filepath.Join(root, "global"),
		"logFile": n.LogFile, "byPathDir": filepath.Join(root, "by-path"), "sysfsDir": filepath.Join(root, "sys")} {
		cfg[k] = v
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(n.Config, b, 0o644); err != nil {
		return nil, err
	}
	backstores := cm["backstores.json"]
	if !reachable {
		backstores = strings.ReplaceAll(backstores, e.Portal, UnreachablePortal)
	}
	return n, os.WriteFile(filepath.Join(root, "src", "backstores.json"), []byte(backstores), 0o644)
}

// install creates the release namespace and the Datera Secret, and runs helm install.
func (e *Env) install(ctx context.Context, valuesFile string) error {
	cs := e.Client
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create namespace %s: %w", Namespace, err)
	}
	if _, err := cs.CoreV1().Secrets(Namespace).Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: CredentialsSecret}, Type: corev1.SecretType(mutate.Driver),
		StringData: map[string]string{"username": DateraUser, "password": DateraPassword},
	}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create the Datera Secret: %w", err)
	}
	if _, err := e.helm(ctx, valuesFile, "install", Release, filepath.Join(repoRoot(), "charts", "petfabric"),
		"--namespace", Namespace, "--kubeconfig", e.Kubeconfig); err != nil {
		return err
	}
	var err error
	e.Manifest, err = e.helm(ctx, "", "get", "manifest", Release, "--namespace", Namespace, "--kubeconfig", e.Kubeconfig)
	return err
}

// startPrograms starts the webhook, the extender and the agents from the installed manifest
// (the webhook's container from the same values rendered without webhook.url: in url mode the
// chart renders no webhook Deployment, the webhook being served from outside the cluster, as
// here).
func (e *Env) startPrograms(ctx context.Context, ca *testpki.CA, webhookPort int, tmplArgs []string, valuesFile string) error {
	installed, err := parseManifest(e.Manifest)
	if err != nil {
		return err
	}
	local := []net.IP{net.ParseIP("127.0.0.1")}
	tlsDir := func(name string) (string, error) {
		pair, err := ca.Serving(local)
		if err != nil {
			return "", err
		}
		dir := filepath.Join(e.Dir, "pki", name)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return "", err
		}
		_, _, err = pair.WriteFiles(dir, "tls")
		return dir, err
	}

	// Webhook.
	withoutURL, err := e.helm(ctx, valuesFile, append(tmplArgs, "--set", "webhook.url=")...)
	if err != nil {
		return err
	}
	whObjs, err := parseManifest(withoutURL)
	if err != nil {
		return err
	}
	whTmpl, err := podTemplate(whObjs, "Deployment", Release+"-webhook")
	if err != nil {
		return err
	}
	whCtr, err := containerOf(whTmpl, "webhook")
	if err != nil {
		return err
	}
	whTLS, err := tlsDir("webhook")
	if err != nil {
		return err
	}
	whKube, err := e.serviceAccountKubeconfig(ctx, whTmpl.Spec.ServiceAccountName, nil)
	if err != nil {
		return err
	}
	whHealth, err := freePort()
	if err != nil {
		return err
	}
	wh, err := e.startProc("webhook", e.binPath("webhook"), HostArgs(whCtr,
		map[string]string{"POD_NAMESPACE": Namespace, "POD_NAME": "webhook-host-0"},
		map[string]string{"/etc/petfabric/tls": whTLS},
		map[string]string{"--listen": fmt.Sprintf("127.0.0.1:%d", webhookPort), "--health-listen": fmt.Sprintf("127.0.0.1:%d", whHealth),
			"--kubeconfig": whKube}), nil)
	if err != nil {
		return err
	}

	// Extender (DaemonSet mode: it already listens on 127.0.0.1:<hostPort>, as the rendered
	// scheduler configuration calls it).
	exTmpl, err := podTemplate(installed, "DaemonSet", Release+"-extender")
	if err != nil {
		return err
	}
	exCtr, err := containerOf(exTmpl, "extender")
	if err != nil {
		return err
	}
	exTLS, err := tlsDir("extender")
	if err != nil {
		return err
	}
	exKube, err := e.serviceAccountKubeconfig(ctx, exTmpl.Spec.ServiceAccountName, nil)
	if err != nil {
		return err
	}
	ex, err := e.startProc("extender", e.binPath("extender"), HostArgs(exCtr,
		map[string]string{"POD_NAMESPACE": Namespace},
		map[string]string{"/etc/petfabric/tls": exTLS},
		map[string]string{"--health-listen": fmt.Sprintf("127.0.0.1:%d", e.extenderHealth), "--kubeconfig": exKube}), nil)
	if err != nil {
		return err
	}

	// Agents: one per node, with a token bound to the node DaemonSet's pod on that node (the
	// node-reports policy reads the node's name from it).
	agTmpl, err := podTemplate(installed, "DaemonSet", Release+"-node")
	if err != nil {
		return err
	}
	agCtr, err := containerOf(agTmpl, "agent")
	if err != nil {
		return err
	}
	pods, err := e.daemonSetPods(ctx)
	if err != nil {
		return err
	}
	if err := e.routeUnreachable(ctx); err != nil {
		return err
	}
	for _, n := range e.Nodes {
		pod := pods[n.Name]
		kube, err := e.serviceAccountKubeconfig(ctx, agTmpl.Spec.ServiceAccountName, &authenticationv1.BoundObjectReference{
			Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID})
		if err != nil {
			return err
		}
		metrics, err := freePort()
		if err != nil {
			return err
		}
		mounts := map[string]string{"/etc/petfabric-src": filepath.Join(n.Root, "src"), "/host/iscsi": filepath.Join(n.Root, "iscsi"),
			"/host/state": n.StateDir}
		if n.agent, err = e.startProc("agent-"+n.Name, e.binPath("flex"), append([]string{"agent"}, HostArgs(agCtr,
			map[string]string{"NODE_NAME": n.Name, "POD_NAMESPACE": Namespace}, mounts,
			map[string]string{"--metrics-listen": fmt.Sprintf("127.0.0.1:%d", metrics), "--kubeconfig": kube})...), nil); err != nil {
			return err
		}
	}

	if err := waitHTTP200(ctx, wh, fmt.Sprintf("http://127.0.0.1:%d/readyz", whHealth), time.Minute); err != nil {
		return err
	}
	if err := e.waitWebhookCalled(ctx, whHealth); err != nil {
		return err
	}
	if err := waitHTTP200(ctx, ex, fmt.Sprintf("http://127.0.0.1:%d/readyz", e.extenderHealth), time.Minute); err != nil {
		return err
	}
	return e.waitReports(ctx)
}

// routeUnreachable adds an "unreachable" route for UnreachablePortal's address (removed by
// Close), so the kernel answers the third node's connects with "no route to host".
func (e *Env) routeUnreachable(ctx context.Context) error {
	addr, _, _ := strings.Cut(UnreachablePortal, ":")
	if out, err := exec.CommandContext(ctx, "ip", "route", "replace", "unreachable", addr+"/32").CombinedOutput(); err != nil {
		return fmt.Errorf("ip route replace unreachable %s: %w: %s", addr, err, out)
	}
	e.routeAdded = true
	return nil
}

// waitWebhookCalled waits until the apiserver calls the webhook (it loads webhook
// configurations asynchronously): a server-side dry-run create of a StatefulSet with a claim
// template until the webhook's metrics count a StatefulSet review.
func (e *Env) waitWebhookCalled(ctx context.Context, health int) error {
	probe := &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "webhook-probe", Namespace: metav1.NamespaceDefault},
		Spec: appsv1.StatefulSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "probe"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "probe"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "registry.example/probe:1"}}}},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{ObjectMeta: metav1.ObjectMeta{Name: "data"},
				Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
					Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}}},
		},
	}
	metrics := fmt.Sprintf("http://127.0.0.1:%d/metrics", health)
	var last string
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		if _, err := e.Client.AppsV1().StatefulSets(probe.Namespace).Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
			last = err.Error()
			return false, nil
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, metrics, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			last = err.Error()
			return false, nil
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		for _, line := range splitLines(string(b)) {
			if strings.HasPrefix(line, "petfabric_webhook_admission_requests_total{") && strings.Contains(line, "statefulsets") {
				return true, nil
			}
		}
		last = "no StatefulSet review counted yet"
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("the apiserver never called the webhook (last: %s): %w", last, err)
	}
	return nil
}

func (e *Env) binPath(name string) string {
	dir := e.opts.BinDir
	if dir == "" {
		dir = filepath.Join(e.Dir, "bin")
	}
	return filepath.Join(dir, name)
}

// daemonSetPods waits for the node DaemonSet's pod on every node and returns them by node.
func (e *Env) daemonSetPods(ctx context.Context) (map[string]corev1.Pod, error) {
	out := map[string]corev1.Pod{}
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		list, err := e.Client.CoreV1().Pods(Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/component=node"})
		if err != nil {
			return false, nil
		}
		for _, p := range list.Items {
			if p.Spec.NodeName != "" && p.DeletionTimestamp == nil {
				out[p.Spec.NodeName] = p
			}
		}
		return len(out) == len(e.Nodes), nil
	})
	if err != nil {
		return nil, fmt.Errorf("the node DaemonSet's pods (have %d of %d): %w", len(out), len(e.Nodes), err)
	}
	return out, nil
}

// waitReports waits until every agent has written its report Lease.
func (e *Env) waitReports(ctx context.Context) error {
	return wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		for _, n := range e.Nodes {
			if n.agent.exited() {
				return false, fmt.Errorf("agent of %s exited: %s", n.Name, tailFile(n.agent.logPath, 20))
			}
			if _, err := e.Client.CoordinationV1().Leases(Namespace).Get(ctx, placement.LeaseName(n.Name), metav1.GetOptions{}); err != nil {
				return false, nil
			}
		}
		return true, nil
	})
}

// serviceAccountKubeconfig writes a kubeconfig carrying a token of the release's
// ServiceAccount sa (bound to bound when not nil), as a pod of that account would hold it.
func (e *Env) serviceAccountKubeconfig(ctx context.Context, sa string, bound *authenticationv1.BoundObjectReference) (string, error) {
	if sa == "" {
		return "", errors.New("the rendered workload names no ServiceAccount")
	}
	tr, err := e.Client.CoreV1().ServiceAccounts(Namespace).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](24 * 3600), BoundObjectRef: bound},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("TokenRequest for %s/%s: %w", Namespace, sa, err)
	}
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["local"] = &clientcmdapi.Cluster{Server: e.Cluster.Config.Host, CertificateAuthorityData: e.Cluster.CAPEM}
	cfg.AuthInfos[sa] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	cfg.Contexts["local"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: sa}
	cfg.CurrentContext = "local"
	name := sa
	if bound != nil {
		name += "-" + bound.Name
	}
	path := filepath.Join(e.Dir, "pki", name+".kubeconfig")
	return path, clientcmd.WriteToFile(*cfg, path)
}

// Mounts lists the mount points under Dir (kubelet's pod volumes and the driver's global
// mounts of every node).
func (e *Env) Mounts() ([]string, error) {
	mi, err := mount.ParseMountInfo("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range mi {
		if strings.HasPrefix(m.MountPoint, e.Dir+"/") {
			out = append(out, m.MountPoint)
		}
	}
	return out, nil
}

// LoopDevices lists the loop devices attached to this environment's volume files.
func (e *Env) LoopDevices() ([]string, error) {
	files, err := filepath.Glob(filepath.Join(e.targetsDir(), "backing", "*.img"))
	if err != nil {
		return nil, err
	}
	var out []string
	for _, f := range files {
		devs, err := flextest.LoopsOf(f)
		if err != nil {
			return nil, err
		}
		out = append(out, devs...)
	}
	return out, nil
}

// Close stops everything Start started and leaves the host as it was: the programs, the
// control plane and kubelets (the cluster restores the sysctls kubelet touched), every mount
// under Dir, the loop devices of the volume files, tgtd's targets and tgtd itself (and its
// control socket), then removes Dir unless KeepDir. Safe to call more than once.
func (e *Env) Close() error {
	e.closeOnce.Do(func() { e.closeErr = e.close() })
	return e.closeErr
}

func (e *Env) close() error {
	var errs []error
	e.mu.Lock()
	procs := slices.Clone(e.procs)
	e.mu.Unlock()
	for _, p := range slices.Backward(procs) {
		if p != e.tgtd {
			p.stop(10 * time.Second)
		}
	}
	// The route goes while this environment still holds the host's kubelet lock (another
	// environment adds the same route only under it).
	if e.routeAdded {
		addr, _, _ := strings.Cut(UnreachablePortal, ":")
		if out, err := exec.Command("ip", "route", "del", "unreachable", addr+"/32").CombinedOutput(); err != nil {
			errs = append(errs, fmt.Errorf("ip route del unreachable %s: %w: %s", addr, err, out))
		}
	}
	if e.Cluster != nil {
		if err := e.Cluster.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("stop the control plane: %w", err))
		}
	}
	if e.simSrv != nil {
		_ = e.simSrv.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for range 5 {
		mounts, err := e.Mounts()
		if err != nil || len(mounts) == 0 {
			break
		}
		slices.SortFunc(mounts, func(a, b string) int { return len(b) - len(a) })
		for _, m := range mounts {
			if err := syscall.Unmount(m, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("unmount %s: %w", m, err))
			}
		}
	}
	files, _ := filepath.Glob(filepath.Join(e.targetsDir(), "backing", "*.img"))
	for _, f := range files {
		if err := flextest.DetachBacking(ctx, f); err != nil {
			errs = append(errs, err)
		}
	}
	if e.exp != nil {
		if err := e.exp.tgt.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("remove tgtd targets: %w", err))
		}
	}
	if e.tgtd != nil {
		// tgtd ignores SIGTERM for a while: remove the placeholder target and ask it to exit
		// ("--op delete --mode system" is refused while targets exist), then stop it.
		ctl := strconv.Itoa(e.TgtControlPort)
		_ = exec.Command("tgtadm", "-C", ctl, "--lld", "iscsi", "--mode", "target", "--op", "delete", "--force", "--tid", "1").Run()
		_ = exec.Command("tgtadm", "-C", ctl, "--mode", "system", "--op", "delete").Run()
		e.tgtd.stop(3 * time.Second)
		for _, f := range []string{tgtSocket(e.TgtControlPort), tgtSocket(e.TgtControlPort) + ".lock"} {
			if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	if !e.opts.KeepDir && e.Dir != "" {
		if mounts, _ := e.Mounts(); len(mounts) > 0 {
			errs = append(errs, fmt.Errorf("not removing %s: mounts left %v", e.Dir, mounts))
		} else if err := os.RemoveAll(e.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
