package placement

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// reader is the extender's side of the freshness rule: its own clock, and the reports it
// holds (an Index), updated by observe as the informer would deliver Lease events.
type reader struct {
	clock  time.Time // the reader's clock; the nodes' clocks are in the Leases
	maxTTL time.Duration
	x      *Index
}

func newReader(maxTTL time.Duration) *reader {
	return &reader{clock: now, maxTTL: maxTTL, x: NewIndex()}
}

func (r *reader) observe(t testing.TB, l *coordinationv1.Lease) {
	t.Helper()
	nr, ok := NodeReportFromLease(l)
	require.True(t, ok)
	prev, _ := r.x.NodeReport(nr.Node)
	nr.Observe(prev, r.clock, r.maxTTL)
	r.x.SetReport(nr)
}

func (r *reader) fresh(t testing.TB, node string) bool {
	t.Helper()
	nr, ok := r.x.NodeReport(node)
	require.True(t, ok)
	return nr.Fresh(r.clock)
}

// renewedLease is node's report Lease as its agent writes it, with renewTime set by the
// node's clock.
func renewedLease(t testing.TB, node string, nodeClock time.Time, ttl time.Duration, attached ...string) *coordinationv1.Lease {
	t.Helper()
	good := map[string]map[string]PortalReport{bsA: {p1: ok(time.Millisecond)}}
	l := leaseFor(t, node, reportOf(good, attached...), 0, ttl)
	l.Spec.RenewTime = &metav1.MicroTime{Time: nodeClock}
	return l
}

// A Lease that claims a renewal an hour in the future and is never renewed again is stale
// once its TTL has passed on the reader's clock. The old rule (renewTime vs. the reader's
// clock) kept it fresh for the whole hour — and with it the node's ReadWriteOnce holds.
func TestReportRenewedInTheFutureGoesStaleAfterItsTTL(t *testing.T) {
	r := newReader(0)
	r.observe(t, renewedLease(t, "liar", now.Add(time.Hour), ttl, "pf-vol-a"))
	assert.True(t, r.fresh(t, "liar"), "fresh right after it was seen")

	r.clock = r.clock.Add(ttl + time.Second)
	assert.False(t, r.fresh(t, "liar"), "stale TTL after the last renewal seen, whatever renewTime says")

	d := Filter(r.clock, []Volume{{VolumeID: "pf-vol-a", Backstore: bsA, RWO: true}}, []string{"liar"}, r.x, AllPortals)
	assert.Empty(t, d.Pass)
	assert.Equal(t, "reachability report is stale (no renewal seen within its 40s validity); is the petfabric node agent running?", d.Failed["liar"])
}

// A node whose clock runs 10 minutes behind but whose agent renews every round stays fresh.
// The old rule judged it stale on every round (its renewTime always 10 minutes old).
func TestNodeWithClockBehindStaysFreshWhileRenewing(t *testing.T) {
	r := newReader(0)
	const round = 10 * time.Second
	behind := -10 * time.Minute
	for i := range 12 { // two minutes of rounds
		nodeClock := r.clock.Add(behind)
		r.observe(t, renewedLease(t, "slow-clock", nodeClock, ttl))
		assert.True(t, r.fresh(t, "slow-clock"), "round %d", i)
		r.clock = r.clock.Add(round)
		assert.True(t, r.fresh(t, "slow-clock"), "between rounds %d", i)
	}
	d := Filter(r.clock, []Volume{{VolumeID: "v", Backstore: bsA, RWO: true}}, []string{"slow-clock"}, r.x, AllPortals)
	assert.Equal(t, []int{0}, d.Pass, "failed: %v", d.Failed)

	// And a node whose clock runs ahead, likewise.
	for range 6 {
		r.observe(t, renewedLease(t, "fast-clock", r.clock.Add(10*time.Minute), ttl))
		r.clock = r.clock.Add(round)
		assert.True(t, r.fresh(t, "fast-clock"))
	}
	// Once it stops renewing, it goes stale on the reader's schedule.
	r.clock = r.clock.Add(ttl)
	assert.False(t, r.fresh(t, "fast-clock"))
}

// A Lease declaring a day of freshness is fresh only for the reader's maximum.
func TestDeclaredLeaseDurationIsCappedByMaxReportTTL(t *testing.T) {
	for _, tc := range []struct {
		name   string
		maxTTL time.Duration
		want   time.Duration
	}{
		{"default cap", 0, DefaultMaxReportTTL},
		{"configured cap", 90 * time.Second, 90 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newReader(tc.maxTTL)
			r.observe(t, renewedLease(t, "greedy", r.clock, 24*time.Hour, "pf-vol-a"))
			nr, _ := r.x.NodeReport("greedy")
			assert.Equal(t, 24*time.Hour, nr.DeclaredTTL)
			assert.Equal(t, tc.want, nr.TTL)
			r.clock = r.clock.Add(tc.want)
			assert.True(t, r.fresh(t, "greedy"))
			r.clock = r.clock.Add(time.Second)
			assert.False(t, r.fresh(t, "greedy"), "a node must not declare itself fresh for a day")
		})
	}
	// A TTL below the cap is kept as declared.
	r := newReader(time.Hour)
	r.observe(t, renewedLease(t, "modest", r.clock, ttl))
	nr, _ := r.x.NodeReport("modest")
	assert.Equal(t, ttl, nr.TTL)
}

// Seeing the same Lease again (an informer relist or resync: same resourceVersion, same
// renewTime) is not a renewal: it must not freshen the report. A write is: a renewTime
// that moves backwards (a node whose clock was stepped back keeps reporting), or a new
// resourceVersion (any write; only the node's own agent may write its Lease).
func TestOnlyAWriteCountsAsRenewal(t *testing.T) {
	r := newReader(0)
	l := renewedLease(t, "a", now.Add(-time.Hour), ttl)
	l.ResourceVersion = "10"
	r.observe(t, l)
	r.clock = r.clock.Add(ttl - time.Second)

	r.observe(t, l.DeepCopy()) // relist
	r.clock = r.clock.Add(2 * time.Second)
	assert.False(t, r.fresh(t, "a"), "the same Lease seen again kept the report fresh")

	back := renewedLease(t, "a", now.Add(-2*time.Hour), ttl)
	back.ResourceVersion = "10" // renewTime alone changed (readers without resourceVersions)
	r.observe(t, back)
	assert.True(t, r.fresh(t, "a"), "a renewTime that went backwards is still a renewal")

	r.clock = r.clock.Add(ttl + time.Second)
	written := back.DeepCopy()
	written.ResourceVersion = "11"
	r.observe(t, written)
	assert.True(t, r.fresh(t, "a"), "a new resourceVersion is a write")

	gone := written.DeepCopy()
	gone.Spec.RenewTime = nil
	gone.ResourceVersion = "12"
	r.observe(t, gone)
	assert.False(t, r.fresh(t, "a"), "a Lease without renewTime is never fresh")
}

// When the reader starts, it has seen nothing yet: every Lease counts as renewed at first
// sight, however old its renewTime. A dead node therefore stays fresh for one TTL after an
// extender restart (the ReadWriteOnce hold it reports is kept, never lifted early), then
// goes stale.
func TestFirstSightCountsAsRenewal(t *testing.T) {
	r := newReader(0)
	r.observe(t, renewedLease(t, "holder", now.Add(-time.Hour), ttl, "pf-vol-a"))
	vols := []Volume{{VolumeID: "pf-vol-a", Backstore: bsA, RWO: true}}
	r.observe(t, renewedLease(t, "other", now, ttl))

	d := Filter(r.clock, vols, []string{"other"}, r.x, AllPortals)
	assert.Equal(t, ReasonRWOHeld, onlyReason(d), "the hold of a node seen for the first time is kept")
	r.clock = r.clock.Add(ttl + time.Second)
	r.observe(t, renewedLease(t, "other", r.clock, ttl))
	d = Filter(r.clock, vols, []string{"other"}, r.x, AllPortals)
	assert.Equal(t, []int{0}, d.Pass, "the holder stopped renewing: its hold lapses after its TTL (failed: %v)", d.Failed)
}

func onlyReason(d Decision) Reason {
	for r, n := range d.Reasons {
		if n > 0 {
			return r
		}
	}
	return ""
}

func TestObserveWithoutPreviousObservation(t *testing.T) {
	nr := &NodeReport{Node: "a", RenewTime: now, DeclaredTTL: ttl}
	prev := &NodeReport{Node: "a", RenewTime: now} // held but never observed (built by hand)
	nr.Observe(prev, now.Add(time.Minute), 0)
	assert.Equal(t, now.Add(time.Minute), nr.ObservedAt, "a previous report that was never observed gives nothing to carry")
	assert.True(t, nr.Fresh(now.Add(time.Minute)))

	noTTL := &NodeReport{Node: "b", RenewTime: now, DeclaredTTL: 0}
	noTTL.Observe(nil, now, 0)
	assert.False(t, noTTL.Fresh(now))
	d := Filter(now, []Volume{{VolumeID: "v", Backstore: bsA}}, []string{"b"}, indexOfReports(noTTL), AllPortals)
	assert.Equal(t, "reachability report has no leaseDurationSeconds, so it is never fresh", d.Failed["b"])
	unobserved := &NodeReport{Node: "c", RenewTime: now, DeclaredTTL: ttl, TTL: ttl}
	d = Filter(now, []Volume{{VolumeID: "v", Backstore: bsA}}, []string{"c"}, indexOfReports(unobserved), AllPortals)
	assert.Equal(t, "reachability report has not been observed yet", d.Failed["c"])
}

// indexOfReports is an Index holding the reports as given (not observed again).
func indexOfReports(reports ...*NodeReport) *Index {
	x := NewIndex()
	for _, nr := range reports {
		x.SetReport(nr)
	}
	return x
}
