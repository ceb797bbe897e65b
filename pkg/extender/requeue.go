package extender

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"

	"github.com/petfabric/petfabric/pkg/placement"
)

// Why a requeue trigger at all: kube-scheduler does not watch Leases, so a node report
// turning good does not move a pod this extender rejected out of the scheduler's
// unschedulable pool; it waits for an unrelated cluster event or the scheduler's periodic
// flush of that pool (five minutes). A pod that an extender rejected is requeued by an
// event of any kind the scheduler watches. The cheapest such event that needs no cluster-wide
// write permission is an update of a CSIStorageCapacity object in the extender's own
// namespace: the scheduler watches that type for its volume binding plugin, which ignores an
// object whose storage class does not exist. So the Requeuer keeps one such object, with a
// storage class name no class has, and patches an annotation on it once per batch of
// recoveries. The proof is TestRecoveryTriggerRequeuesRejectedPod against the real scheduler.
//
// PersistentVolume changes (a volume released or deleted) need no trigger: the scheduler
// watches PersistentVolumes itself.

// Requeue trigger defaults.
const (
	// DefaultRequeueObject names the CSIStorageCapacity object the Requeuer patches.
	DefaultRequeueObject = "petfabric-requeue-trigger"
	// RequeueStorageClass is the trigger object's storageClassName. No StorageClass may be
	// given this name; the scheduler's volume binding plugin then ignores the object.
	RequeueStorageClass = "requeue-trigger.petfabric.io"
	// RequeueAnnotation is the annotation each trigger write changes.
	RequeueAnnotation = "petfabric.io/requeue"
	// DefaultRequeueCoalesce is how long the Requeuer gathers recoveries into one write.
	DefaultRequeueCoalesce = 250 * time.Millisecond
	// DefaultRequeueMinInterval spaces writes at most 2 per second.
	DefaultRequeueMinInterval = 500 * time.Millisecond
)

// reportImproved says whether next may admit a pod that prev made the filter reject: a
// readable, fresh report reaching some portal where there was no report, an unreadable or a
// stale one; a backstore with more reachable portals than before (or all of them, where
// before not all); a reachable backstore new to the report; or a volume no longer in the
// attached list (a ReadWriteOnce holder letting go). A renewal with the same content, a deleted report or a worse one is no recovery. now
// is the reader's clock at which prev's freshness is judged, before next is observed.
func reportImproved(prev, next *placement.NodeReport, now time.Time) bool {
	if next == nil || next.Err != nil || next.Report == nil || !next.Fresh(now) {
		return false
	}
	prevUsable := prev != nil && prev.Err == nil && prev.Report != nil && prev.Fresh(now)
	for name, b := range next.Report.Backstores {
		ns := placement.Summarize(b)
		if ns.Reachable == 0 {
			continue // a backstore this node reaches no portal of admits no pod using it
		}
		if !prevUsable {
			return true
		}
		was, ok := prev.Report.Backstores[name]
		if !ok {
			return true
		}
		ps := placement.Summarize(was)
		if ns.Reachable > ps.Reachable || (ns.Reachable == ns.Portals && ps.Reachable < ps.Portals) {
			return true
		}
	}
	if !prevUsable {
		return false
	}
	for _, v := range prev.Report.Attached {
		if _, still := next.Attached[v]; !still {
			return true
		}
	}
	return false
}

// RequeueOptions configure a Requeuer.
type RequeueOptions struct {
	// Namespace and Name locate the CSIStorageCapacity trigger object (Name defaults to
	// DefaultRequeueObject).
	Namespace, Name string
	// Coalesce is how long after the first recovery of a batch the write happens, gathering
	// the recoveries that arrive meanwhile (default DefaultRequeueCoalesce).
	Coalesce time.Duration
	// MinInterval is the least time between two writes (default DefaultRequeueMinInterval).
	MinInterval time.Duration
	// Clock is the clock (the real one when nil).
	Clock clock.WithTicker
	// Log receives write failures (slog.Default when nil).
	Log *slog.Logger
	// Metrics, when set, counts signals, writes and failures.
	Metrics *Metrics
}

// Requeuer turns report recoveries into at most one trigger write per batch. Notify never
// blocks, so the informer handlers that call it (and with them filtering) never wait for the
// apiserver.
type Requeuer struct {
	client kubernetes.Interface
	opts   RequeueOptions
	log    *slog.Logger
	kick   chan struct{}

	mu      sync.Mutex
	pending bool // a batch is scheduled and not yet written
	seq     uint64
}

// NewRequeuer checks the options and returns a Requeuer; Run does the writing.
func NewRequeuer(client kubernetes.Interface, opts RequeueOptions) (*Requeuer, error) {
	if opts.Namespace == "" {
		return nil, errors.New("requeue trigger: namespace is required")
	}
	if opts.Name == "" {
		opts.Name = DefaultRequeueObject
	}
	if opts.Coalesce < 0 || opts.MinInterval < 0 {
		return nil, fmt.Errorf("requeue trigger: coalesce %s and min interval %s must not be negative", opts.Coalesce, opts.MinInterval)
	}
	if opts.Coalesce == 0 {
		opts.Coalesce = DefaultRequeueCoalesce
	}
	if opts.MinInterval == 0 {
		opts.MinInterval = DefaultRequeueMinInterval
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	r := &Requeuer{client: client, opts: opts, log: opts.Log, kick: make(chan struct{}, 1)}
	if r.log == nil {
		r.log = slog.Default()
	}
	return r, nil
}

// Notify records a recovery; a batch already pending absorbs it (counted as coalesced).
func (r *Requeuer) Notify(node string) {
	r.mu.Lock()
	joined := r.pending
	r.pending = true
	r.mu.Unlock()
	if joined {
		r.opts.Metrics.requeueSignal("coalesced")
	} else {
		r.kick <- struct{}{} // never blocks: only the signal that sets pending sends
		r.opts.Metrics.requeueSignal("scheduled")
	}
	r.log.Debug("node report improved; requeue trigger pending", "node", node)
}

// Run writes the trigger once per batch until ctx ends: the first signal of a batch starts a
// Coalesce wait, the write happens no sooner than MinInterval after the previous one, and
// signals arriving during the wait or the write join the batch (the write reflects them;
// one arriving after the write starts the next batch).
func (r *Requeuer) Run(ctx context.Context) {
	var last time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
		}
		wait := r.opts.Coalesce
		if !last.IsZero() {
			wait = max(wait, r.opts.MinInterval-r.opts.Clock.Since(last))
		}
		t := r.opts.Clock.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
		// Signals that arrived while waiting are covered by this write; later ones start
		// the next batch.
		r.mu.Lock()
		r.pending = false
		r.mu.Unlock()
		last = r.opts.Clock.Now()
		if err := r.write(ctx); err != nil {
			r.opts.Metrics.requeueTrigger("error")
			r.log.Warn("requeue trigger write failed; rejected pods wait for the scheduler's next retry", "object", r.opts.Namespace+"/"+r.opts.Name, "err", err)
			continue
		}
		r.opts.Metrics.requeueTrigger("ok")
	}
}

// write patches the trigger's annotation, creating the object when it is missing.
func (r *Requeuer) write(ctx context.Context) error {
	r.mu.Lock()
	r.seq++
	value := strconv.FormatUint(r.seq, 10) + "@" + r.opts.Clock.Now().UTC().Format(time.RFC3339Nano)
	r.mu.Unlock()
	caps := r.client.StorageV1().CSIStorageCapacities(r.opts.Namespace)
	patch := fmt.Appendf(nil, `{"metadata":{"annotations":{%q:%q}}}`, RequeueAnnotation, value)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err := caps.Patch(ctx, r.opts.Name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: "petfabric-extender"})
	if !apierrors.IsNotFound(err) {
		if err != nil {
			return fmt.Errorf("patch CSIStorageCapacity %s/%s: %w", r.opts.Namespace, r.opts.Name, err)
		}
		return nil
	}
	_, err = caps.Create(ctx, &storagev1.CSIStorageCapacity{
		ObjectMeta: metav1.ObjectMeta{Name: r.opts.Name, Namespace: r.opts.Namespace,
			Labels:      map[string]string{placement.LeaseManagedByLabel: placement.LeaseManagedByValue},
			Annotations: map[string]string{RequeueAnnotation: value}},
		StorageClassName: RequeueStorageClass,
	}, metav1.CreateOptions{FieldManager: "petfabric-extender"})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create CSIStorageCapacity %s/%s: %w", r.opts.Namespace, r.opts.Name, err)
	}
	return nil
}

// requeueMetrics are the trigger's counters (part of Metrics).
type requeueMetrics struct {
	triggers *prometheus.CounterVec
	signals  *prometheus.CounterVec
}

func newRequeueMetrics(reg *prometheus.Registry) requeueMetrics {
	m := requeueMetrics{
		triggers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "petfabric_extender_requeue_triggers_total",
			Help: "Writes of the requeue trigger object (one per batch of node report recoveries), by result (ok, error).",
		}, []string{"result"}),
		signals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "petfabric_extender_requeue_signals_total",
			Help: "Node report recoveries seen, by outcome: scheduled (started a batch) or coalesced (joined a pending batch).",
		}, []string{"outcome"}),
	}
	reg.MustRegister(m.triggers, m.signals)
	for _, r := range []string{"ok", "error"} {
		m.triggers.WithLabelValues(r)
	}
	for _, o := range []string{"scheduled", "coalesced"} {
		m.signals.WithLabelValues(o)
	}
	return m
}

func (m *Metrics) requeueTrigger(result string) {
	if m != nil {
		m.requeue.triggers.WithLabelValues(result).Inc()
	}
}

func (m *Metrics) requeueSignal(outcome string) {
	if m != nil {
		m.requeue.signals.WithLabelValues(outcome).Inc()
	}
}
