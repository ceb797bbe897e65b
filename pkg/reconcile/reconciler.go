package reconcile

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/tools/record"
)

// Reconciler is the leader-elected reconcile loop.
type Reconciler struct {
	opts        Options
	metrics     *metrics
	recorder    record.EventRecorder
	broadcaster record.EventBroadcaster // nil when Options.Recorder was given
	leading     atomic.Bool
	running     atomic.Bool
	// shared is the process's informer factory (UseInformers); nil: a factory per term.
	shared informers.SharedInformerFactory
}

// New validates opts and returns a Reconciler; nothing runs until Run or RunController.
func New(opts Options) (*Reconciler, error) {
	r := &Reconciler{opts: opts}
	if err := r.opts.setDefaults(); err != nil {
		return nil, err
	}
	// Fail at start-up, not on the first PV: every PV records its cluster as the owner, and
	// VolumeID validates the cluster id.
	if r.opts.Mutate.ClusterID == "" {
		return nil, errors.New("reconcile: Options.Mutate.ClusterID is required (cmd/webhook derives one from the kube-system namespace UID)")
	}
	if _, err := mutateVolumeID(r.opts.Mutate.ClusterID); err != nil {
		return nil, fmt.Errorf("reconcile: %w", err)
	}
	m, err := newMetrics(r.opts.Metrics)
	if err != nil {
		return nil, fmt.Errorf("reconcile: register metrics: %w", err)
	}
	r.metrics = m
	r.recorder = r.opts.Recorder
	if r.recorder == nil {
		r.broadcaster = record.NewBroadcaster()
		r.broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: r.opts.Client.CoreV1().Events("")})
		r.recorder = r.broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: Component})
	}
	return r, nil
}

// IsLeader reports whether this replica currently holds the lease and runs the loop.
func (r *Reconciler) IsLeader() bool { return r.leading.Load() }

func (r *Reconciler) setLeader(v bool) {
	r.leading.Store(v)
	if v {
		r.metrics.isLeader.Set(1)
	} else {
		r.metrics.isLeader.Set(0)
	}
}

// Run stands for election on the Lease LeaseNamespace/LeaseName and runs the loop while it
// leads. Losing the lease stops the loop and stands for election again. When ctx ends, the loop
// is stopped first and the lease released afterwards (ReleaseOnCancel), so a successor never
// overlaps with this replica's workers. Run returns nil when ctx ends; it may be called once.
func (r *Reconciler) Run(ctx context.Context) error {
	if r.opts.LeaseNamespace == "" || r.opts.Identity == "" {
		return errors.New("reconcile: Run needs Options.LeaseNamespace and Options.Identity")
	}
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("reconcile: Run or RunController is already running")
	}
	defer r.shutdownEvents()
	log := r.opts.Logger.With("lease", r.opts.LeaseNamespace+"/"+r.opts.LeaseName, "identity", r.opts.Identity)
	for ctx.Err() == nil {
		if err := r.runTerm(ctx); err != nil {
			r.metrics.errors.WithLabelValues(ReasonLeaderElection).Inc()
			return err
		}
		if ctx.Err() == nil {
			log.Warn("lost the reconcile lease; standing for election again")
			select {
			case <-ctx.Done():
			case <-time.After(r.opts.RetryPeriod):
			}
		}
	}
	return nil
}

// runTerm runs one leader election: acquire, lead until the lease is lost or ctx ends, release.
func (r *Reconciler) runTerm(ctx context.Context) error {
	log := r.opts.Logger.With("lease", r.opts.LeaseNamespace+"/"+r.opts.LeaseName, "identity", r.opts.Identity)
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: r.opts.LeaseNamespace, Name: r.opts.LeaseName},
		Client:     r.opts.LeaderElectionClient.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: r.opts.Identity},
	}
	// The elector gets its own context so that, when ctx ends, the loop is stopped before the
	// lease is released.
	electCtx, cancelElect := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelElect()

	// The elector starts OnStartedLeading in a goroutine of its own; finished makes sure a
	// late start after stopLoop never runs the loop, and stopLoop waits for an earlier one.
	var mu sync.Mutex
	var termCancel context.CancelFunc
	termDone := make(chan struct{})
	started, finished := false, false
	stopLoop := func() {
		mu.Lock()
		finished = true
		cancel, wasStarted := termCancel, started
		mu.Unlock()
		if wasStarted {
			cancel()
			<-termDone
		}
	}

	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		Name:            Component,
		LeaseDuration:   r.opts.LeaseDuration,
		RenewDeadline:   r.opts.RenewDeadline,
		RetryPeriod:     r.opts.RetryPeriod,
		ReleaseOnCancel: true,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(lctx context.Context) {
				tctx, cancel := context.WithCancel(lctx)
				mu.Lock()
				if finished {
					mu.Unlock()
					cancel()
					return
				}
				termCancel, started = cancel, true
				mu.Unlock()
				defer close(termDone)
				defer cancel()
				log.Info("acquired the reconcile lease; starting the loop")
				r.setLeader(true)
				defer r.setLeader(false)
				if err := r.runController(tctx); tctx.Err() == nil {
					// The loop ended on its own while leading: give the lease up rather than
					// hold it idle, so this or another replica starts afresh.
					log.Error("reconcile loop stopped while leading; releasing the lease", "err", err)
					cancelElect()
				}
			},
			OnStoppedLeading: func() {},
			OnNewLeader: func(id string) {
				if id != r.opts.Identity {
					log.Info("reconcile lease held by another replica", "leader", id)
				}
			},
		},
	})
	if err != nil {
		return fmt.Errorf("reconcile: leader election: %w", err)
	}
	electorDone := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			stopLoop()
			cancelElect()
		case <-electorDone:
		}
	}()
	le.Run(electCtx)
	close(electorDone)
	stopLoop() // lost the lease (or ctx ended): wait for the loop to stop
	return nil
}

// RunController runs the loop without leader election until ctx ends (tests, single replica).
func (r *Reconciler) RunController(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("reconcile: Run or RunController is already running")
	}
	defer r.shutdownEvents()
	r.setLeader(true)
	defer r.setLeader(false)
	return r.runController(ctx)
}

func (r *Reconciler) shutdownEvents() {
	if r.broadcaster != nil {
		r.broadcaster.Shutdown()
	}
}
