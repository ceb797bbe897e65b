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
	"k8s.io/client-go/tools/record"

	"github.com/petfabric/petfabric/pkg/datera"
	"github.com/petfabric/petfabric/pkg/mutate"
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
	// Component is the event source and the leader-election name.
	Component = "petfabric-reconcile"
)

// DateraDeleter is the part of the Datera client the loop uses; *datera.Client implements it.
// DeleteAppInstance must treat a missing app_instance as success.
type DateraDeleter interface {
	DeleteAppInstance(ctx context.Context, name string) error
}

var _ DateraDeleter = (*datera.Client)(nil)

// Options configure a Reconciler. Client is required; every other zero field gets a default.
type Options struct {
	Client kubernetes.Interface
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

	// OrphanGrace is how long a managed PV may stay Available before it can be judged an
	// orphan, counted from its creation (default 5m).
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
	DateraFor func(ctx context.Context, pv *corev1.PersistentVolume) (DateraDeleter, error)
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
	if o.Client == nil {
		return errors.New("reconcile: Options.Client is required")
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

func (c *dateraCache) forPV(ctx context.Context, pv *corev1.PersistentVolume) (DateraDeleter, error) {
	fv := pv.Spec.FlexVolume
	if fv == nil {
		return nil, errors.New("not a FlexVolume PV")
	}
	endpoint, err := c.opts.DateraEndpoint(fv.Options[mutate.OptBackstoreServer])
	if err != nil {
		return nil, err
	}
	user, pass, err := c.opts.Credentials(ctx, fv.SecretRef)
	if err != nil {
		return nil, err
	}
	key := dateraKey{endpoint: endpoint, tenant: datera.NormalizeTenant(fv.Options[mutate.OptTenant]), username: user, password: sha256.Sum256([]byte(pass))}
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
