package placement

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// plainState hides the Index behind the State interface alone, so Filter judges every
// node from its report (no per-node masks, no backstore numbers): the reference the
// Index's fast path must agree with.
type plainState struct{ State }

// TestFilterFastPathAgrees: on random nodes, reports and volumes (backstores probed or
// not, portals down, stale, never renewed and unreadable reports, RWO volumes held by
// live and dead nodes, a backstore no report names), Filter over the Index decides and
// words every failure exactly as Filter over the reports alone, under both policies.
func TestFilterFastPathAgrees(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	backstores := []string{bsA, bsB, "172.16.0.30:7717", "172.16.0.40:7717"}
	portal := func(i int) PortalReport {
		if rng.IntN(4) == 0 {
			return down(fmt.Sprintf("refused %d", i))
		}
		return ok(time.Duration(100+rng.IntN(5000)) * time.Microsecond)
	}
	var passed, heldFail int
	for round := range 200 {
		var reports []*NodeReport
		var nodes []string
		for n := range 30 {
			node := fmt.Sprintf("n%d-%d", round, n)
			nodes = append(nodes, node)
			if rng.IntN(10) == 0 {
				continue // no report
			}
			ps := map[string]map[string]PortalReport{}
			for _, bs := range backstores[:3] {
				switch rng.IntN(5) {
				case 0: // not probed
				case 1:
					ps[bs] = map[string]PortalReport{} // probed, no portals
				default:
					ps[bs] = map[string]PortalReport{p1: portal(1), p2: portal(2)}
				}
			}
			var attached []string
			for v := range 4 {
				if rng.IntN(8) == 0 {
					attached = append(attached, fmt.Sprintf("v%d", v))
				}
			}
			ago := time.Duration(rng.IntN(60)) * time.Second
			l := leaseFor(t, node, reportOf(ps, attached...), ago, ttl)
			if rng.IntN(15) == 0 {
				l.Annotations = nil // unreadable
			}
			if rng.IntN(20) == 0 {
				l.Spec.RenewTime = nil // never renewed
			}
			nr, found := NodeReportFromLease(l)
			require.True(t, found)
			nr.Observe(nil, now.Add(-ago), 0)
			reports = append(reports, nr)
		}
		x := indexOfReports(reports...)
		nodes = append(nodes, nodes[rng.IntN(len(nodes))]) // a node named twice
		var vols []Volume
		for v := range 1 + rng.IntN(3) {
			vols = append(vols, Volume{Claim: fmt.Sprintf("ns/c%d", v), VolumeID: fmt.Sprintf("v%d", v),
				Backstore: backstores[rng.IntN(len(backstores))], RWO: rng.IntN(2) == 0})
		}
		for _, policy := range []PortalPolicy{AllPortals, AnyPortal} {
			fast := Filter(now, vols, nodes, x, policy)
			slow := Filter(now, vols, nodes, plainState{x}, policy)
			require.Equal(t, slow, fast, "round %d, policy %d, volumes %+v", round, policy, vols)
			require.Equal(t, fast, FilterRefs(nil, now, vols, nodes, refsOf(x, nodes), x, policy), "with NodeRefs: round %d", round)
			passed += len(fast.Pass)
			heldFail += fast.Reasons[ReasonRWOHeld]
		}
	}
	// The cases above must reach both ends of the fast path.
	assert.Greater(t, passed, 300)
	assert.Greater(t, heldFail, 50)
	t.Logf("%d passes, %d held elsewhere", passed, heldFail)
}

// TestFilterManyBackstores: past the 64 backstores a node's masks can hold, Filter goes
// by the report and still decides right.
func TestFilterManyBackstores(t *testing.T) {
	var leases []*NodeReport
	for n := range 3 {
		ps := map[string]map[string]PortalReport{}
		for i := range 70 {
			ps[fmt.Sprintf("172.16.1.%d:7717", i)] = map[string]PortalReport{p1: ok(time.Millisecond)}
		}
		if n == 1 {
			ps["172.16.1.69:7717"] = map[string]PortalReport{p1: down("refused")}
		}
		l := leaseFor(t, fmt.Sprintf("n%d", n), reportOf(ps), time.Second, ttl)
		nr, found := NodeReportFromLease(l)
		require.True(t, found)
		nr.Observe(nil, now.Add(-time.Second), 0)
		leases = append(leases, nr)
	}
	x := indexOfReports(leases...)
	vols := []Volume{{VolumeID: "a", Backstore: "172.16.1.0:7717"}, {VolumeID: "b", Backstore: "172.16.1.69:7717"}}
	d := Filter(now, vols, []string{"n0", "n1", "n2"}, x, AllPortals)
	assert.Equal(t, []int{0, 2}, d.Pass)
	assert.Equal(t, map[string]string{"n1": "cannot reach portal 10.1.1.5:3260 of backstore 172.16.1.69:7717 (refused)"}, d.Failed)
	assert.Equal(t, d, Filter(now, vols, []string{"n0", "n1", "n2"}, plainState{x}, AllPortals))
}

// TestIndexNodeGeneration: the generation moves when a node gains or loses its report,
// not when a report is renewed; a renewal keeps the Index's string for the name.
func TestIndexNodeGeneration(t *testing.T) {
	good := map[string]map[string]PortalReport{bsA: {p1: ok(time.Millisecond)}}
	x := NewIndex()
	g0 := x.NodeGeneration()
	nr, _ := NodeReportFromLease(leaseFor(t, "a", reportOf(good), time.Second, ttl))
	x.SetReport(nr)
	g1 := x.NodeGeneration()
	assert.NotEqual(t, g0, g1)
	held, _ := x.NodeReport("a")
	first := held.Node

	renewed, _ := NodeReportFromLease(leaseFor(t, strings.Clone("a"), reportOf(good), 0, ttl))
	x.SetReport(renewed)
	assert.Equal(t, g1, x.NodeGeneration(), "a renewal is not a new node")
	var names []string
	x.EachNode(func(n string, _ NodeRef) { names = append(names, n) })
	assert.Equal(t, []string{"a"}, names)
	cur, _ := x.NodeReport("a")
	assert.Same(t, renewed, cur)
	assert.True(t, unsafe.StringData(first) == unsafe.StringData(cur.Node), "the name keeps the Index's string")

	x.DeleteReport("b") // not there: nothing changes
	assert.Equal(t, g1, x.NodeGeneration())
	x.DeleteReport("a")
	assert.NotEqual(t, g1, x.NodeGeneration())
}

// TestFilterRefsReusesPass: FilterRefs decides as Filter does, in the slice it is given
// when that has room, and in a new one when not.
func TestFilterRefsReusesPass(t *testing.T) {
	good := map[string]map[string]PortalReport{bsA: {p1: ok(time.Millisecond)}}
	x := indexOf(t, leaseFor(t, "a", reportOf(good), time.Second, ttl), leaseFor(t, "c", reportOf(good), time.Second, ttl))
	vols := []Volume{{VolumeID: "v", Backstore: bsA}}
	nodes := []string{"a", "b", "c"}
	want := Filter(now, vols, nodes, x, AllPortals)
	buf := make([]int, 7, 10)
	got := FilterRefs(buf, now, vols, nodes, nil, x, AllPortals)
	assert.Equal(t, want, got)
	assert.True(t, &buf[0] == &got.Pass[0], "the given slice holds Pass")
	small := FilterRefs(make([]int, 0, 1), now, vols, nodes, nil, x, AllPortals)
	assert.Equal(t, want, small)
}

// refsOf is what the extender keeps beside the names it interns: each node's NodeRef from
// EachNode (zero for a name without a report).
func refsOf(x *Index, nodes []string) []NodeRef {
	byName := map[string]NodeRef{}
	x.EachNode(func(n string, ref NodeRef) { byName[n] = ref })
	refs := make([]NodeRef, len(nodes))
	for i, n := range nodes {
		refs[i] = byName[n]
	}
	return refs
}

// TestNodeRefsFollowTheIndex: NodeRefs taken once judge as a lookup by name would after
// the Index changes under them: a renewal (same entry, new verdict), a deleted report (the
// ref is ignored: no report), a report deleted and set again (a new entry, found by name),
// and a NodeRef given for the wrong name is never trusted past its node being deleted.
func TestNodeRefsFollowTheIndex(t *testing.T) {
	good := map[string]map[string]PortalReport{bsA: {p1: ok(time.Millisecond)}}
	bad := map[string]map[string]PortalReport{bsA: {p1: down("connection refused")}}
	set := func(x *Index, node string, ps map[string]map[string]PortalReport) {
		nr, found := NodeReportFromLease(leaseFor(t, node, reportOf(ps), time.Second, ttl))
		require.True(t, found)
		nr.Observe(nil, now.Add(-time.Second), 0)
		x.SetReport(nr)
	}
	x := NewIndex()
	for _, n := range []string{"a", "b", "c"} {
		set(x, n, good)
	}
	nodes := []string{"a", "b", "c", "d"}
	refs := refsOf(x, nodes)
	vols := []Volume{{VolumeID: "v", Backstore: bsA}}
	check := func(step string) {
		t.Helper()
		for _, policy := range []PortalPolicy{AllPortals, AnyPortal} {
			require.Equal(t, Filter(now, vols, nodes, x, policy), FilterRefs(nil, now, vols, nodes, refs, x, policy), step)
		}
	}
	check("as taken")
	set(x, "a", bad) // renewal: a's entry now says unreachable
	check("after a renewal")
	assert.Contains(t, FilterRefs(nil, now, vols, nodes, refs, x, AllPortals).Failed, "a")
	x.DeleteReport("b")
	check("after a delete")
	assert.Equal(t, msgNoReport, FilterRefs(nil, now, vols, nodes, refs, x, AllPortals).Failed["b"])
	set(x, "b", good) // back, as a new entry
	check("after a delete and a new report")
	assert.NotContains(t, FilterRefs(nil, now, vols, nodes, refs, x, AllPortals).Failed, "b")
	set(x, "d", good) // a node that had no ref gains a report
	check("after a new node")
	// refs of another Index are not used.
	other := NewIndex()
	for _, n := range []string{"a", "b", "c"} {
		set(other, n, bad)
	}
	require.Equal(t, Filter(now, vols, nodes, x, AllPortals), FilterRefs(nil, now, vols, nodes, refsOf(other, nodes), x, AllPortals))
	// refs of another length are not used at all.
	require.Equal(t, Filter(now, vols, nodes, x, AllPortals), FilterRefs(nil, now, vols, nodes, refs[:2], x, AllPortals))
}
