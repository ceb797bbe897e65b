package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	coordclient "k8s.io/client-go/kubernetes/typed/coordination/v1"

	"github.com/petfabric/petfabric/pkg/iscsi"
	"github.com/petfabric/petfabric/pkg/placement"

	"github.com/petfabric/petfabric/pkg/flexstate"
)

// ProbeFunc runs one discovery probe; iscsi.Probe in production.
type ProbeFunc func(ctx context.Context, portal string, opts iscsi.ProbeOptions) (*iscsi.ProbeResult, error)

// Options configure an Agent.
type Options struct {
	// Node is this node's name (the Lease holder); required.
	Node string
	// Initiator is the node's iSCSI initiator name; required.
	Initiator string
	// Backstores are the backstores to probe; required.
	Backstores []Backstore
	// StateDir is the flex driver's state directory.
	StateDir string
	// Leases is the Lease client of the release namespace; required.
	Leases coordclient.LeaseInterface
	// Interval between probe rounds (default 10s); each wait is stretched by up to
	// Jitter × Interval (default 0.2) so a DaemonSet's agents do not probe in lockstep.
	Interval time.Duration
	Jitter   float64
	// TTL is the report's freshness (leaseDurationSeconds). Default 4 × Interval, so three
	// rounds can fail to publish before the extender drops the node.
	TTL time.Duration
	// ProbeTimeout bounds one portal probe (default 3s).
	ProbeTimeout time.Duration
	// AttachPoll is how often the state directory is re-read between rounds (default 1s):
	// a new attachment is published within about this long, so the extender sees a
	// ReadWriteOnce volume held soon after kubelet mounted it.
	AttachPoll time.Duration
	// WriteTimeout bounds one Lease write (default 10s).
	WriteTimeout time.Duration
	// Probe replaces iscsi.Probe (tests).
	Probe ProbeFunc
	// Now replaces time.Now (tests).
	Now func() time.Time
	// Log is the logger (slog.Default when nil).
	Log *slog.Logger
	// Metrics, when set, records probe results and Lease writes.
	Metrics *Metrics
}

// Agent probes and publishes; see the package documentation.
type Agent struct {
	opts Options
	log  *slog.Logger
	now  func() time.Time

	// pending holds the newest report not yet written; notify wakes the writer.
	mu      sync.Mutex
	pending *placement.Report
	notify  chan struct{}
	// lease is the last Lease object written or read (its resourceVersion saves a GET
	// per round, like kubelet's node lease controller).
	lease *coordinationv1.Lease

	lastRound   atomic.Int64 // unix nanos of the last completed probe round
	lastWritten atomic.Int64 // unix nanos of the last successful Lease write
}

// New validates the options and fills in defaults.
func New(opts Options) (*Agent, error) {
	switch {
	case opts.Node == "":
		return nil, errors.New("agent: node name required")
	case opts.Initiator == "":
		return nil, errors.New("agent: initiator name required")
	case len(opts.Backstores) == 0:
		return nil, errors.New("agent: no backstores configured")
	case opts.Leases == nil:
		return nil, errors.New("agent: Lease client required")
	}
	if opts.Interval <= 0 {
		opts.Interval = 10 * time.Second
	}
	if opts.Jitter <= 0 {
		opts.Jitter = 0.2
	}
	if opts.TTL <= 0 {
		// Lease durations are whole seconds: round up.
		opts.TTL = (4*opts.Interval + time.Second - 1).Truncate(time.Second)
	}
	if opts.TTL < time.Second {
		return nil, fmt.Errorf("agent: TTL %s is below the Lease's one-second resolution", opts.TTL)
	}
	if opts.ProbeTimeout <= 0 {
		opts.ProbeTimeout = 3 * time.Second
	}
	if opts.AttachPoll <= 0 {
		opts.AttachPoll = time.Second
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 10 * time.Second
	}
	if opts.Probe == nil {
		opts.Probe = iscsi.Probe
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Log
	if log == nil {
		log = slog.Default()
	}
	return &Agent{opts: opts, log: log.With("node", opts.Node), now: opts.Now, notify: make(chan struct{}, 1)}, nil
}

// Healthy reports whether the probe loop completed a round recently (within 3 intervals
// plus the probe timeout). It says nothing about the apiserver: an agent that cannot
// publish is still doing its job and must not be restarted for it.
func (a *Agent) Healthy() bool {
	last := a.lastRound.Load()
	return last != 0 && a.now().Sub(time.Unix(0, last)) < 3*a.opts.Interval+a.opts.ProbeTimeout
}

// Run probes and publishes until ctx ends.
func (a *Agent) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); a.writer(ctx) }()
	defer wg.Wait()

	attached := a.readAttached(nil)
	report := a.probeRound(ctx, attached)
	a.submit(report)
	poll := time.NewTicker(a.opts.AttachPoll)
	defer poll.Stop()
	next := time.NewTimer(wait.Jitter(a.opts.Interval, a.opts.Jitter))
	defer next.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-poll.C:
			now := a.readAttached(attached)
			if !slices.Equal(now, attached) {
				a.log.Info("attached volumes changed", "attached", now, "before", attached)
				attached = now
				// Publish at once with the last probe results; the next round refreshes them.
				r := *report
				r.Attached = attached
				report = &r
				a.submit(report)
			}
		case <-next.C:
			attached = a.readAttached(attached)
			report = a.probeRound(ctx, attached)
			a.submit(report)
			next.Reset(wait.Jitter(a.opts.Interval, a.opts.Jitter))
		}
	}
}

// readAttached reads the state directory; on error it keeps the previous list (dropping
// attachments on a transient read error would lift ReadWriteOnce protection).
func (a *Agent) readAttached(prev []string) []string {
	vols, unreadable, err := flexstate.Attached(a.opts.StateDir)
	if err != nil {
		a.log.Error("cannot read the driver's state directory; keeping the previous attached list", "dir", a.opts.StateDir, "err", err)
		if prev == nil {
			return []string{}
		}
		return prev
	}
	if len(unreadable) > 0 {
		a.log.Warn("unreadable volume records counted as attached", "files", unreadable)
	}
	if a.opts.Metrics != nil {
		a.opts.Metrics.attached.Set(float64(len(vols)))
	}
	return vols
}

// probeRound probes every portal of every backstore concurrently.
func (a *Agent) probeRound(ctx context.Context, attached []string) *placement.Report {
	start := a.now()
	r := &placement.Report{
		Version: placement.ReportVersion, Initiator: a.opts.Initiator, ProbedAt: start.UTC(),
		Backstores: make(map[string]placement.BackstoreReport, len(a.opts.Backstores)), Attached: attached,
	}
	type result struct {
		backstore, portal string
		rep               placement.PortalReport
	}
	results := make(chan result)
	var wg sync.WaitGroup
	for _, bs := range a.opts.Backstores {
		creds, credErr := bs.CHAP.credentials()
		for _, portal := range bs.Portals {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if credErr != nil {
					results <- result{bs.Server, portal, placement.PortalReport{Error: "discovery CHAP credentials: " + credErr.Error()}}
					return
				}
				results <- result{bs.Server, portal, a.probe(ctx, bs.Server, portal, creds)}
			}()
		}
	}
	go func() { wg.Wait(); close(results) }()
	for res := range results {
		b := r.Backstores[res.backstore]
		if b.Portals == nil {
			b.Portals = map[string]placement.PortalReport{}
		}
		b.Portals[res.portal] = res.rep
		r.Backstores[res.backstore] = b
	}
	a.lastRound.Store(a.now().UnixNano())
	return r
}

func (a *Agent) probe(ctx context.Context, backstore, portal string, creds *iscsi.DiscoveryCHAP) placement.PortalReport {
	start := time.Now()
	res, err := a.opts.Probe(ctx, portal, iscsi.ProbeOptions{
		InitiatorName: a.opts.Initiator, CHAP: creds, Timeout: a.opts.ProbeTimeout,
	})
	took := time.Since(start)
	kind := "ok"
	var rep placement.PortalReport
	if err != nil {
		kind = errorKind(err)
		reason := err.Error()
		var pe *iscsi.ProbeError
		if errors.As(err, &pe) {
			reason = pe.Reason()
		}
		rep = placement.PortalReport{Error: reason}
		a.log.Warn("portal probe failed", "backstore", backstore, "portal", portal, "kind", kind, "err", reason)
	} else {
		rtt := max(res.RTT, time.Microsecond) // a zero RTT would read as "not measured"
		rep = placement.PortalReport{OK: true, RTTMicros: rtt.Microseconds()}
		a.log.Debug("portal probe ok", "backstore", backstore, "portal", portal, "rtt", rtt, "targets", len(res.Targets))
	}
	if m := a.opts.Metrics; m != nil {
		m.observeProbe(backstore, portal, kind, took, rep)
	}
	return rep
}

// errorKind names a probe failure for metrics.
func errorKind(err error) string {
	for _, k := range []struct {
		err  error
		name string
	}{
		{iscsi.ErrConnRefused, "refused"}, {iscsi.ErrTimeout, "timeout"}, {iscsi.ErrUnreachable, "unreachable"},
		{iscsi.ErrAuthFailed, "auth_failed"}, {iscsi.ErrLoginRejected, "login_rejected"},
		{iscsi.ErrTargetNotVisible, "not_visible"}, {iscsi.ErrProtocol, "protocol"},
	} {
		if errors.Is(err, k.err) {
			return k.name
		}
	}
	return "other"
}

// submit hands a report to the writer, replacing one not yet written.
func (a *Agent) submit(r *placement.Report) {
	a.mu.Lock()
	a.pending = r
	a.mu.Unlock()
	select {
	case a.notify <- struct{}{}:
	default:
	}
}

// writer writes the newest report; on failure it retries with backoff (up to one
// interval), always with the newest report, until it succeeds or ctx ends.
func (a *Agent) writer(ctx context.Context) {
	backoff := wait.Backoff{Duration: 500 * time.Millisecond, Factor: 2, Jitter: 0.1, Steps: 1 << 30, Cap: a.opts.Interval}
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.notify:
		}
		for {
			a.mu.Lock()
			r := a.pending
			a.pending = nil
			a.mu.Unlock()
			if r == nil {
				break
			}
			err := a.write(ctx, r)
			if err == nil {
				backoff.Duration = 500 * time.Millisecond
				backoff.Steps = 1 << 30
				continue
			}
			if ctx.Err() != nil {
				return
			}
			// Keep r unless a newer report arrived meanwhile.
			a.mu.Lock()
			if a.pending == nil {
				a.pending = r
			}
			a.mu.Unlock()
			delay := backoff.Step()
			a.log.Warn("cannot publish the reachability report; probing continues", "err", err, "retryIn", delay.Round(time.Millisecond))
			select {
			case <-ctx.Done():
				return
			case <-time.After(delay):
			}
		}
	}
}

// write creates or updates the node's Lease with r.
func (a *Agent) write(ctx context.Context, r *placement.Report) (err error) {
	start := time.Now()
	defer func() {
		if m := a.opts.Metrics; m != nil {
			m.observeWrite(err, time.Since(start))
		}
	}()
	enc, err := r.Encode()
	if err != nil {
		return fmt.Errorf("encode report: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, a.opts.WriteTimeout)
	defer cancel()
	name := placement.LeaseName(a.opts.Node)
	for attempt := 0; attempt < 3; attempt++ {
		cur := a.lease
		if cur == nil {
			got, err := a.opts.Leases.Get(ctx, name, metav1.GetOptions{})
			switch {
			case apierrors.IsNotFound(err):
				created, err := a.opts.Leases.Create(ctx, a.fill(&coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name}}, enc, true), metav1.CreateOptions{})
				if apierrors.IsAlreadyExists(err) {
					continue // raced with ourselves after a restart; read it and update
				}
				if err != nil {
					return fmt.Errorf("create Lease %s: %w", name, err)
				}
				a.lease = created
				a.lastWritten.Store(a.now().UnixNano())
				return nil
			case err != nil:
				return fmt.Errorf("get Lease %s: %w", name, err)
			}
			cur = got
		}
		updated, err := a.opts.Leases.Update(ctx, a.fill(cur.DeepCopy(), enc, false), metav1.UpdateOptions{})
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			a.lease = nil // someone else changed or deleted it: read again
			continue
		}
		if err != nil {
			a.lease = nil
			return fmt.Errorf("update Lease %s: %w", name, err)
		}
		a.lease = updated
		a.lastWritten.Store(a.now().UnixNano())
		return nil
	}
	return fmt.Errorf("update Lease %s: still conflicting after 3 attempts", name)
}

// fill sets everything the report contract says the Lease carries.
func (a *Agent) fill(l *coordinationv1.Lease, report string, create bool) *coordinationv1.Lease {
	now := metav1.NewMicroTime(a.now())
	if l.Labels == nil {
		l.Labels = map[string]string{}
	}
	l.Labels[placement.LeaseManagedByLabel] = placement.LeaseManagedByValue
	l.Labels[placement.LeaseComponentLabel] = placement.LeaseComponentValue
	if l.Annotations == nil {
		l.Annotations = map[string]string{}
	}
	l.Annotations[placement.ReportAnnotation] = report
	holder := a.opts.Node
	ttl := int32(a.opts.TTL / time.Second)
	if create || l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != holder {
		l.Spec.AcquireTime = &now
	}
	l.Spec.HolderIdentity = &holder
	l.Spec.LeaseDurationSeconds = &ttl
	l.Spec.RenewTime = &now
	return l
}
