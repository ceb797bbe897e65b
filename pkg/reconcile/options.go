package reconcile

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"

	"github.com/petfabric/petfabric/pkg/datera"
	"github.com/petfabric/petfabric/pkg/mutate"
	"github.com/petfabric/petfabric/pkg/pvoptions"
)

// Defaults of zero Options fields.
const (
	DefaultLeaseName     = "petfabric-webhook-reconcile"
	DefaultOrphanGrace   = 5 * time.Minute
	DefaultResync        = time.Minute
	DefaultWorkers       = 4
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	DefaultRetryPeriod   = 2 * time.Second
	DefaultRetryBase     = time.Second
	DefaultRetryMax      = 5 * time.Minute
	DefaultDateraTimeout = time.Minute
	// DefaultFenceAfter is how long a node's report must have been seen unchanged before the
	// loop may fence that node's initiator out of a ReadWriteOnce volume's ACL. The node agent
	// renews its report every 10 s and declares it fresh for 40 s (its TTL), and the extender
	// treats a report older than that as dead. Twice the TTL lets one late round plus a slow or
	// restarted apiserver pass without a fence, and the extra 40 s (one more TTL) covers a
	// loop that just started watching; a fence also needs every pod of the claim gone from that
	// node, so in practice it follows the node lifecycle controller's eviction anyway.
	DefaultFenceAfter = 2 * time.Minute
	// DefaultKubeAPIQPS and DefaultKubeAPIBurst size the loop's own client (Options.KubeConfig):
	// a pass creates at most MaxOrdinals PVs per StatefulSet template, and every delete, free
	// and fence is preceded by one or two live GETs. 20 QPS creates a 1000-ordinal StatefulSet
	// in under a minute, about one resync, without crowding the admission path's client.
	DefaultKubeAPIQPS   = 20
	DefaultKubeAPIBurst = 40
	// Component is the event source and the leader-election name.
	Component = "petfabric-reconcile"
)

// DateraAPI is the part of the Datera client the loop uses; *datera.Client implements it.
// DeleteAppInstance must treat a missing app_instance as success; the others report one as
// datera.ErrNotFound.
type DateraAPI interface {
	DeleteAppInstance(ctx context.Context, name string) error
	// GetMetadata reads the app_instance's metadata, where the owner is recorded.
	GetMetadata(ctx context.Context, appInstance string) (map[string]string, error)
	// GetAppInstance finds the storage_instance whose ACL a fence edits.
	GetAppInstance(ctx context.Context, name string) (*datera.AppInstance, error)
	GetACL(ctx context.Context, appInstance, storageInstance string) (*datera.ACLPolicy, error)
	RemoveInitiatorFromACL(ctx context.Context, appInstance, storageInstance, iqn string) error
}

var _ DateraAPI = (*datera.Client)(nil)

// Options configure a Reconciler. Client is required; every other zero field gets a default.
type Options struct {
	// Client is the loop's API client. When nil, KubeConfig is required and the loop builds
	// its own client from it with KubeAPIQPS/KubeAPIBurst, and a separate one for leader
	// election, so a burst of PV creates can never delay a lease renewal.
	Client kubernetes.Interface
	// KubeConfig is used when Client is nil (cmd/webhook passes it).
	KubeConfig *rest.Config
	// KubeAPIQPS and KubeAPIBurst rate-limit the client built from KubeConfig (defaults 20, 40).
	KubeAPIQPS   float32
	KubeAPIBurst int
	// LeaderElectionClient is used only by the leader elector's Lease lock, so that the
	// loop's (or admission's) API traffic can never delay a renewal. Default: a client of its
	// own (5 QPS) when built from KubeConfig, else Client.
	LeaderElectionClient kubernetes.Interface
	// Mutate is the webhook's configuration: the loop decides exactly as the webhook does.
	Mutate mutate.Config

	// LeaseNamespace and LeaseName locate the coordination.k8s.io Lease of the election
	// (LeaseNamespace is required by Run; LeaseName defaults to DefaultLeaseName).
	LeaseNamespace string
	LeaseName      string
	// Identity is this candidate's holder identity, e.g. the pod name (required by Run).
	Identity string
	// LeaseDuration, RenewDeadline and RetryPeriod tune the election (defaults 15s, 10s, 2s).
	LeaseDuration time.Duration
	RenewDeadline time.Duration
	RetryPeriod   time.Duration

	// OrphanGrace is how long a managed PV must have been seen Available, with its claim
	// absent, before it can be judged an orphan (default 5m). It is counted from when this
	// loop first observed that, not from the PV's creation: a Released PV freed for a claim
	// that is still being stored is old, but has just become Available.
	OrphanGrace time.Duration
	// Resync is the informers' resync period: every object is re-examined this often (default 1m).
	Resync time.Duration
	// Workers is the number of concurrent reconciles (default 4).
	Workers int
	// RetryBase and RetryMax bound the per-item exponential backoff of failed reconciles
	// (defaults 1s and 5m). Items are retried for as long as they fail.
	RetryBase time.Duration
	RetryMax  time.Duration

	// Credentials returns the Datera username and password of a PV's flexVolume.secretRef.
	// Default: the Secret's "username" and "password" keys, read through Client.
	Credentials func(ctx context.Context, ref *corev1.SecretReference) (username, password string, err error)
	// DateraFor returns the Datera client for a PV. Default: a pkg/datera client for the PV's
	// backstoreServer (through DateraEndpoint) and tenant options, with Credentials, cached per
	// endpoint, tenant and credentials.
	DateraFor func(ctx context.Context, pv *corev1.PersistentVolume) (DateraAPI, error)
	// DateraEndpoint turns a backstoreServer option into the API URL of the default DateraFor
	// (default datera.EndpointForBackstore: port 7718 https, 7717 http).
	DateraEndpoint func(backstoreServer string) (string, error)
	// DateraCACertPEM adds trusted CAs for https backstores; DateraInsecureSkipVerify turns
	// certificate verification off (explicit opt-in only). Used by the default DateraFor.
	DateraCACertPEM          []byte
	DateraInsecureSkipVerify bool
	// DateraTimeout bounds one Datera deletion including the client's own retries (default 1m);
	// the workqueue retries after that.
	DateraTimeout time.Duration

	// ReportNamespace holds the node agents' report Leases (petfabric-node-<node>), which map
	// an initiator to its node for fencing. Default: LeaseNamespace. With neither set, the loop
	// never fences (it cannot tell whose an initiator is).
	ReportNamespace string
	// FenceAfter is how long a node's report must have been observed unchanged before its
	// initiator may be fenced out of a ReadWriteOnce volume's ACL (default 2m, at least 1s).
	FenceAfter time.Duration

	// SchedulingGate: the loop removes mutate.SchedulingGate from a pod (the webhook's pod hook
	// adds it) as soon as every petfabric claim of the pod is Bound, and, while one is not,
	// records one Event on the pod naming the claims after GateEventAfter. It watches pods
	// (slimmed) even when fencing is off. Off: gates are left alone.
	SchedulingGate bool
	// GateEventAfter is how long a gated pod waits before the loop records why (default 30s).
	GateEventAfter time.Duration

	// Recorder receives the events. Default: a broadcaster writing Events through Client,
	// source component "petfabric-reconcile".
	Recorder record.EventRecorder
	// Logger receives structured logs (default: discard).
	Logger *slog.Logger
	// Metrics registers the loop's metrics when set.
	Metrics prometheus.Registerer

	// now is the clock (tests).
	now func() time.Time
}

func (o *Options) setDefaults() error {
	if o.KubeAPIQPS <= 0 {
		o.KubeAPIQPS = DefaultKubeAPIQPS
	}
	if o.KubeAPIBurst <= 0 {
		o.KubeAPIBurst = DefaultKubeAPIBurst
	}
	if o.Client == nil {
		if o.KubeConfig == nil {
			return errors.New("reconcile: Options.Client or Options.KubeConfig is required")
		}
		cfg := rest.CopyConfig(o.KubeConfig)
		cfg.QPS, cfg.Burst = o.KubeAPIQPS, o.KubeAPIBurst
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			return fmt.Errorf("reconcile: client from Options.KubeConfig: %w", err)
		}
		o.Client = cs
		// Leader election on a client of its own: its renewals never queue behind the loop.
		ecfg := rest.CopyConfig(o.KubeConfig)
		ecfg.QPS, ecfg.Burst = 5, 10
		if o.LeaderElectionClient == nil {
			if o.LeaderElectionClient, err = kubernetes.NewForConfig(ecfg); err != nil {
				return fmt.Errorf("reconcile: election client from Options.KubeConfig: %w", err)
			}
		}
	}
	if o.LeaderElectionClient == nil {
		o.LeaderElectionClient = o.Client
	}
	setDur := func(d *time.Duration, def time.Duration) {
		if *d <= 0 {
			*d = def
		}
	}
	if o.LeaseName == "" {
		o.LeaseName = DefaultLeaseName
	}
	setDur(&o.LeaseDuration, DefaultLeaseDuration)
	setDur(&o.RenewDeadline, DefaultRenewDeadline)
	setDur(&o.RetryPeriod, DefaultRetryPeriod)
	setDur(&o.OrphanGrace, DefaultOrphanGrace)
	setDur(&o.Resync, DefaultResync)
	setDur(&o.RetryBase, DefaultRetryBase)
	setDur(&o.RetryMax, DefaultRetryMax)
	setDur(&o.DateraTimeout, DefaultDateraTimeout)
	setDur(&o.FenceAfter, DefaultFenceAfter)
	setDur(&o.GateEventAfter, DefaultGateEventAfter)
	if o.FenceAfter < time.Second {
		return fmt.Errorf("reconcile: Options.FenceAfter %s is below 1s: a report cannot be judged dead that fast", o.FenceAfter)
	}
	if o.ReportNamespace == "" {
		o.ReportNamespace = o.LeaseNamespace
	}
	if o.RetryMax < o.RetryBase {
		o.RetryMax = o.RetryBase
	}
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.now == nil {
		o.now = time.Now
	}
	if o.DateraEndpoint == nil {
		o.DateraEndpoint = datera.EndpointForBackstore
	}
	if o.Credentials == nil {
		client := o.Client
		o.Credentials = func(ctx context.Context, ref *corev1.SecretReference) (string, string, error) {
			return secretCredentials(ctx, client, ref)
		}
	}
	if o.DateraFor == nil {
		cache := &dateraCache{opts: o, clients: map[dateraKey]*datera.Client{}}
		o.DateraFor = cache.forPV
	}
	return nil
}

// secretCredentials reads the username and password keys of the Secret.
func secretCredentials(ctx context.Context, client kubernetes.Interface, ref *corev1.SecretReference) (string, string, error) {
	if ref == nil || ref.Name == "" || ref.Namespace == "" {
		return "", "", errors.New("the PV's flexVolume.secretRef must name a Secret and its namespace")
	}
	s, err := client.CoreV1().Secrets(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	if err != nil {
		return "", "", fmt.Errorf("read Datera credentials secret %s/%s: %w", ref.Namespace, ref.Name, err)
	}
	user, pass := string(s.Data["username"]), string(s.Data["password"])
	if user == "" || pass == "" {
		return "", "", fmt.Errorf("the Datera credentials secret %s/%s lacks the username or password key", ref.Namespace, ref.Name)
	}
	return user, pass, nil
}

// dateraKey identifies a client; the password enters only as a digest.
type dateraKey struct {
	endpoint, tenant, username string
	password                   [sha256.Size]byte
}

// dateraCache keeps one client (and so one Datera session) per backstore, tenant and user.
type dateraCache struct {
	opts    *Options
	mu      sync.Mutex
	clients map[dateraKey]*datera.Client
}

func (c *dateraCache) forPV(ctx context.Context, pv *corev1.PersistentVolume) (DateraAPI, error) {
	fv := pv.Spec.FlexVolume
	if fv == nil {
		return nil, errors.New("not a FlexVolume PV")
	}
	endpoint, err := c.opts.DateraEndpoint(fv.Options[pvoptions.OptBackstoreServer])
	if err != nil {
		return nil, err
	}
	user, pass, err := c.opts.Credentials(ctx, fv.SecretRef)
	if err != nil {
		return nil, err
	}
	key := dateraKey{endpoint: endpoint, tenant: datera.NormalizeTenant(fv.Options[pvoptions.OptTenant]), username: user, password: sha256.Sum256([]byte(pass))}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cl, ok := c.clients[key]; ok {
		return cl, nil
	}
	cl, err := datera.New(datera.Config{
		Endpoint: endpoint, Username: user, Password: pass, Tenant: key.tenant,
		CACertPEM: c.opts.DateraCACertPEM, InsecureSkipVerify: c.opts.DateraInsecureSkipVerify,
		DriverName: Component,
		// A few quick attempts; the workqueue's backoff does the long waiting.
		Retry:  datera.Retry{Initial: 250 * time.Millisecond, Max: 2 * time.Second, Attempts: 3},
		Logger: c.opts.Logger,
	})
	if err != nil {
		return nil, err
	}
	c.clients[key] = cl
	return cl, nil
}
