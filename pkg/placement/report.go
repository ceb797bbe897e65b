package placement

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
)

// The reachability report is the contract between the node agent (writer, cmd/flex agent,
// a DaemonSet) and the scheduler extender (reader, a Deployment); the reconcile loop also reads
// its initiator and attached list before fencing. This file is its single definition, and
// testdata/report.golden.json pins its wire format.
//
// Contract version 1 (ReportVersion) is the first. The writer and the readers are upgraded
// separately, so for a while old and new run side by side:
//   - A field may be added without a new version when its absence means "not known" (the zero
//     value claims nothing): a reader ignores fields it does not know, and an older writer
//     simply does not send the new one.
//   - A change to what a field means takes a new version. A reader accepts every version from
//     oldestReportVersion to ReportVersion, at least the previous one, so upgrading the agents
//     after the readers never drops a node.
//   - A reader refuses a newer version than it knows instead of guessing what its fields mean:
//     the node then has no usable report (the filter says so for that node) until the reader
//     is upgraded. So readers (extender, webhook) are upgraded before the agents.

const (
	// ReportAnnotation is the Lease annotation that carries the JSON Report.
	ReportAnnotation = "petfabric.io/report"
	// ReportVersion is the schema version this code writes, and the newest it reads.
	ReportVersion = 1
	// oldestReportVersion is the oldest version a reader still accepts (at least
	// ReportVersion-1 once there is a version 2).
	oldestReportVersion = 1
	// LeaseNamePrefix starts the name of every report Lease: petfabric-node-<node>.
	LeaseNamePrefix = "petfabric-node-"
	// LeaseManagedByLabel marks report Leases (app.kubernetes.io/managed-by=petfabric), so a
	// reader can select them among other Leases in the namespace.
	LeaseManagedByLabel = "app.kubernetes.io/managed-by"
	// LeaseManagedByValue is the value of LeaseManagedByLabel.
	LeaseManagedByValue = "petfabric"
	// LeaseComponentLabel names the writer of the Lease.
	LeaseComponentLabel = "app.kubernetes.io/component"
	// LeaseComponentValue is the value of LeaseComponentLabel.
	LeaseComponentValue = "node-agent"
)

// Report is what a node agent found in one probe round. Encoded as JSON in the
// ReportAnnotation of the node's Lease.
type Report struct {
	// Version is ReportVersion.
	Version int `json:"version"`
	// Initiator is the node's iSCSI initiator name the probes logged in with.
	Initiator string `json:"initiator"`
	// Backstores maps each configured backstoreServer (the PV option "backstoreServer",
	// host:port of the Datera management API) to the probe results of its iSCSI portals.
	Backstores map[string]BackstoreReport `json:"backstores"`
	// Attached lists the volumeIDs the FlexVolume driver has attached on this node (one
	// <volumeID>.json record each in its state directory), sorted.
	Attached []string `json:"attached"`
	// ProbedAt is when the probe round that produced Backstores started.
	ProbedAt time.Time `json:"probedAt"`
}

// BackstoreReport holds the results for the portals of one backstore.
type BackstoreReport struct {
	// Portals maps "ip:port" to the probe result.
	Portals map[string]PortalReport `json:"portals"`
}

// PortalReport is the result of one iSCSI discovery probe (Login, SendTargets, Logout).
type PortalReport struct {
	// OK is true when the whole discovery session succeeded for the node's initiator.
	OK bool `json:"ok"`
	// RTTMicros is the round-trip time the probe measured, in microseconds (0 when !OK).
	RTTMicros int64 `json:"rttMicros"`
	// Error says why the probe failed, e.g. "connection refused" (empty when OK).
	Error string `json:"error,omitempty"`
}

// RTT returns the round-trip time as a Duration.
func (p PortalReport) RTT() time.Duration { return time.Duration(p.RTTMicros) * time.Microsecond }

// Encode returns the annotation value.
func (r *Report) Encode() (string, error) {
	if err := r.Validate(); err != nil {
		return "", err
	}
	b, err := json.Marshal(r)
	if err != nil {
		return "", fmt.Errorf("encode reachability report: %w", err)
	}
	return string(b), nil
}

// Validate checks what a reader relies on.
func (r *Report) Validate() error {
	if r.Version < oldestReportVersion || r.Version > ReportVersion {
		return fmt.Errorf("unsupported report version %d (this build reads versions %d to %d; a newer agent needs a newer reader)", r.Version, oldestReportVersion, ReportVersion)
	}
	if r.Initiator == "" {
		return errors.New("report has no initiator name")
	}
	if r.ProbedAt.IsZero() {
		return errors.New("report has no probedAt time")
	}
	for bs, b := range r.Backstores {
		if bs == "" {
			return errors.New("report has a backstore with an empty name")
		}
		for portal, p := range b.Portals {
			if _, _, err := net.SplitHostPort(portal); err != nil {
				return fmt.Errorf("backstore %s: portal %q is not host:port: %w", bs, portal, err)
			}
			if !p.OK && p.Error == "" {
				return fmt.Errorf("backstore %s: portal %s is not ok but has no error", bs, portal)
			}
			if p.RTTMicros < 0 {
				return fmt.Errorf("backstore %s: portal %s has a negative RTT", bs, portal)
			}
		}
	}
	if !slices.IsSorted(r.Attached) {
		return errors.New("report's attached volume list is not sorted")
	}
	return nil
}

// DecodeReport parses and validates an annotation value.
func DecodeReport(s string) (*Report, error) {
	var r Report
	if err := json.Unmarshal([]byte(s), &r); err != nil {
		return nil, fmt.Errorf("report annotation is not valid JSON: %w", err)
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return &r, nil
}

// LeaseName is the name of a node's report Lease: "petfabric-node-<node>". Node names can
// be 253 characters, like Lease names, so a name that would not fit keeps a prefix of the
// node name and ends in a hash of the full name (readers key by holderIdentity anyway).
func LeaseName(node string) string {
	const maxName = 253
	if len(LeaseNamePrefix)+len(node) <= maxName {
		return LeaseNamePrefix + node
	}
	sum := sha256.Sum256([]byte(node))
	suffix := "-" + hex.EncodeToString(sum[:])[:16]
	keep := maxName - len(LeaseNamePrefix) - len(suffix)
	// A DNS label may not start with '-' or '.', so trim those before the suffix.
	return LeaseNamePrefix + strings.TrimRight(node[:keep], ".-") + suffix
}

// DefaultMaxReportTTL caps the freshness a report Lease may declare (leaseDurationSeconds).
// The agent's default is 4 × its 10 s interval = 40 s; a Lease asking for a day must not
// keep a dead node, and the ReadWriteOnce holds it reports, alive for a day.
const DefaultMaxReportTTL = 2 * time.Minute

// NodeReport is a node's Lease as the extender sees it.
//
// # Freshness
//
// A report is fresh while less than TTL has passed, on the reader's own clock, since the
// reader saw its Lease written: a renewTime or a resourceVersion it had not seen before
// (Observe). renewTime is written with the node's clock, which may be off by any amount or
// forged; it is compared for change only, never with the reader's clock. This is how
// kube-controller-manager's node lifecycle controller judges kubelet leases, and how the
// reconcile loop judges these reports before fencing, so both agree on what is stale.
// Counting any write (not only a new renewTime) errs towards keeping a holder alive; the
// chart's admission policy lets only the node's own agent write its Lease. Consequences:
//   - a Lease that claims a renewal in the future, or declares a TTL of a day, but is not
//     renewed again goes stale TTL (capped by the reader's maximum) after it was seen;
//   - a node whose clock is minutes behind or ahead stays fresh as long as it renews;
//   - re-reading an unchanged Lease (an informer relist or resync) is not a renewal;
//   - when the reader starts, every Lease counts as just renewed: a node whose agent died
//     before the restart is fresh for one more TTL. That errs towards keeping a dead node's
//     ReadWriteOnce holds, never towards lifting a live node's;
//   - a Lease without renewTime was never renewed and is never fresh.
type NodeReport struct {
	// Node is the node name (the Lease's holderIdentity).
	Node string
	// Report is the decoded annotation; nil when Err is set.
	Report *Report
	// Err says why the annotation could not be used.
	Err error
	// RenewTime is the Lease's renewTime as the node wrote it (node clock): only its changes
	// mean anything.
	RenewTime time.Time
	// ResourceVersion is the Lease's resourceVersion: a change is a write.
	ResourceVersion string
	// ObservedAt is when the reader first saw RenewTime, on the reader's clock (Observe).
	// Zero means not observed, or never renewed: not fresh.
	ObservedAt time.Time
	// DeclaredTTL is the Lease's leaseDurationSeconds.
	DeclaredTTL time.Duration
	// TTL is how long after ObservedAt the report stays fresh: DeclaredTTL, capped by the
	// reader's maximum (Observe).
	TTL time.Duration
	// Attached is Report.Attached as a set, for constant-time lookups while scoring.
	Attached map[string]struct{}
	// Summary condenses each backstore's portals once, when the Lease is read, so that
	// filtering and scoring thousands of nodes per request is a map lookup per volume.
	Summary map[string]BackstoreSummary
	// byID holds the same summaries indexed by the Index's backstore numbers (set by
	// Index.SetReport), turning the per-node map lookup into a slice index.
	byID []BackstoreSummary
	// staleMsg (for a TTL of staleTTL) and errMsg are Filter's messages for this report when
	// it is not fresh or unreadable, built by Index.SetReport so that a request only copies
	// them.
	staleMsg, errMsg string
	staleTTL         time.Duration
}

// BackstoreSummary condenses one backstore's portal results.
type BackstoreSummary struct {
	// Portals and Reachable count the probed and the reachable portals.
	Portals, Reachable int
	// SlowestRTT is the largest RTT among the reachable portals.
	SlowestRTT time.Duration
	// unreachable is the Filter message for a node that misses a portal (empty when every
	// portal is reachable), built once when the report is read rather than per request.
	unreachable string
}

// Summarize condenses a backstore report.
func Summarize(b BackstoreReport) BackstoreSummary {
	s := BackstoreSummary{Portals: len(b.Portals)}
	for _, p := range b.Portals {
		if p.OK {
			s.Reachable++
			s.SlowestRTT = max(s.SlowestRTT, p.RTT())
		}
	}
	return s
}

// summarize is Summarize with Filter's message for the named backstore.
func summarize(backstore string, b BackstoreReport) BackstoreSummary {
	s := BackstoreSummary{Portals: len(b.Portals)}
	for _, p := range b.Portals {
		if p.OK {
			s.Reachable++
			s.SlowestRTT = max(s.SlowestRTT, p.RTT())
		}
	}
	if s.Reachable < s.Portals {
		s.unreachable = portalProblem(backstore, b)
	}
	return s
}

// backstoreRef names a backstore by name and, when the State numbers backstores, by id.
type backstoreRef struct {
	name string
	id   int // -1 when unnumbered
}

// backstoreAt returns a backstore's summary, by number when possible.
func (n *NodeReport) backstoreAt(ref backstoreRef) (BackstoreSummary, bool) {
	if ref.id >= 0 && n.byID != nil {
		if ref.id < len(n.byID) && n.byID[ref.id].Portals > 0 {
			return n.byID[ref.id], true
		}
		return BackstoreSummary{}, false
	}
	return n.backstore(ref.name)
}

// backstore returns the summary of one backstore (computing it when the report was built
// by hand rather than by NodeReportFromLease).
func (n *NodeReport) backstore(name string) (BackstoreSummary, bool) {
	if n.Summary != nil {
		s, ok := n.Summary[name]
		return s, ok
	}
	b, ok := n.Report.Backstores[name]
	if !ok {
		return BackstoreSummary{}, false
	}
	return summarize(name, b), true
}

// Observe sets ObservedAt and TTL. prev is the same node's report as this reader last held
// it (nil if none); now is the reader's clock (time.Now, whose monotonic reading makes ages
// immune to wall-clock steps); maxTTL caps DeclaredTTL (≤ 0: DefaultMaxReportTTL).
// A renewTime or resourceVersion prev did not have counts as a renewal seen now; the same
// Lease seen again keeps prev's ObservedAt, so informer relists and resyncs never freshen
// a report.
func (n *NodeReport) Observe(prev *NodeReport, now time.Time, maxTTL time.Duration) {
	if maxTTL <= 0 {
		maxTTL = DefaultMaxReportTTL
	}
	n.TTL = min(n.DeclaredTTL, maxTTL)
	switch {
	case n.RenewTime.IsZero():
		n.ObservedAt = time.Time{}
	case prev != nil && !prev.ObservedAt.IsZero() && prev.RenewTime.Equal(n.RenewTime) && prev.ResourceVersion == n.ResourceVersion:
		n.ObservedAt = prev.ObservedAt
	default:
		n.ObservedAt = now
	}
}

// Age is how long ago, on the reader's clock, the report's last renewal was seen.
func (n *NodeReport) Age(now time.Time) time.Duration { return now.Sub(n.ObservedAt) }

// Fresh reports whether the last renewal was seen at most TTL ago (see NodeReport).
func (n *NodeReport) Fresh(now time.Time) bool { return freshAt(now, n.ObservedAt, n.TTL) }

// freshAt is the freshness rule on its two inputs (the Index keeps copies of them in its
// entries, so that judging a node need not read its report).
func freshAt(now, observedAt time.Time, ttl time.Duration) bool {
	return ttl > 0 && !observedAt.IsZero() && now.Sub(observedAt) <= ttl
}

// NodeReportFromLease converts a Lease. ok is false when the Lease is not a report Lease
// (no holder, or a name that does not belong to its holder); then it must be ignored. The
// result is not fresh until the reader Observes it.
func NodeReportFromLease(l *coordinationv1.Lease) (nr *NodeReport, ok bool) {
	if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" {
		return nil, false
	}
	node := *l.Spec.HolderIdentity
	if l.Name != LeaseName(node) {
		return nil, false
	}
	nr = &NodeReport{Node: node, ResourceVersion: l.ResourceVersion}
	if l.Spec.RenewTime != nil {
		nr.RenewTime = l.Spec.RenewTime.Time
	}
	if l.Spec.LeaseDurationSeconds != nil {
		nr.DeclaredTTL = time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second
	}
	raw, found := l.Annotations[ReportAnnotation]
	if !found {
		// The Lease is not named: this text ends up in the Filter message, which must read
		// the same for every node with the same problem.
		nr.Err = fmt.Errorf("no %s annotation on the Lease", ReportAnnotation)
		return nr, true
	}
	r, err := DecodeReport(raw)
	if err != nil {
		nr.Err = err
		return nr, true
	}
	nr.Report = r
	nr.Attached = make(map[string]struct{}, len(r.Attached))
	for _, v := range r.Attached {
		nr.Attached[v] = struct{}{}
	}
	nr.Summary = make(map[string]BackstoreSummary, len(r.Backstores))
	for name, b := range r.Backstores {
		nr.Summary[name] = summarize(name, b)
	}
	return nr, true
}
