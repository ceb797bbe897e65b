package placement

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	coordinationv1 "k8s.io/api/coordination/v1"
)

// kube-scheduler counts identical per-node messages into its FailedScheduling event, and
// the event recorder folds repeated events into one only when the messages are equal. So
// two nodes that fail for the same cause must get the same string, whatever their names
// and report ages, and the same nodes judged again later must get it again.
func TestFilterMessagesAreTheSameForOneCauseAndAcrossRetries(t *testing.T) {
	refused := map[string]map[string]PortalReport{bsA: {p1: down("connection refused"), p2: ok(time.Millisecond)}}
	good := map[string]map[string]PortalReport{bsA: {p1: ok(time.Millisecond), p2: ok(time.Millisecond)}}
	vol := Volume{Claim: "shop/data-db-0", VolumeID: "pf-vol-a", Backstore: bsA, RWO: true}
	volB := Volume{Claim: "shop/logs-db-0", VolumeID: "pf-vol-b", Backstore: bsB, RWO: true}
	for _, tc := range []struct {
		name   string
		vols   []Volume
		leases func(t testing.TB) []*coordinationv1.Lease
		want   string
	}{
		{"no report", []Volume{vol}, func(testing.TB) []*coordinationv1.Lease { return nil },
			"no reachability report from the petfabric node agent (no petfabric-node-<node> Lease)"},
		{"unreachable portal, reports of different ages", []Volume{vol}, func(t testing.TB) []*coordinationv1.Lease {
			return []*coordinationv1.Lease{leaseFor(t, "worker-1", reportOf(refused), time.Second, ttl), leaseFor(t, "worker-2", reportOf(refused), 17*time.Second, ttl)}
		}, "cannot reach portal 10.1.1.5:3260 of backstore 172.16.0.10:7717 (connection refused)"},
		{"stale reports of different ages", []Volume{vol}, func(t testing.TB) []*coordinationv1.Lease {
			return []*coordinationv1.Lease{leaseFor(t, "worker-1", reportOf(good), 2*time.Minute, ttl), leaseFor(t, "worker-2", reportOf(good), time.Hour, ttl)}
		}, "reachability report is stale (no renewal seen within its 40s validity); is the petfabric node agent running?"},
		{"unreadable reports", []Volume{vol}, func(t testing.TB) []*coordinationv1.Lease {
			return []*coordinationv1.Lease{leaseFor(t, "worker-1", nil, time.Second, ttl), leaseFor(t, "worker-2", nil, 9*time.Second, ttl)}
		}, "unreadable reachability report: no petfabric.io/report annotation on the Lease"},
		{"backstore not probed", []Volume{vol, volB}, func(t testing.TB) []*coordinationv1.Lease {
			return []*coordinationv1.Lease{leaseFor(t, "worker-1", reportOf(good), time.Second, ttl), leaseFor(t, "worker-2", reportOf(good), 5*time.Second, ttl)}
		}, "backstore 172.16.0.20:7717 of volume pf-vol-b is not probed by the node agent (add it to the agent's backstores)"},
		{"RWO volume held by a live node", []Volume{vol}, func(t testing.TB) []*coordinationv1.Lease {
			return []*coordinationv1.Lease{leaseFor(t, "worker-1", reportOf(good), time.Second, ttl), leaseFor(t, "worker-2", reportOf(good), 5*time.Second, ttl),
				leaseFor(t, "holder", reportOf(refused, "pf-vol-a"), 3*time.Second, ttl)}
		}, "ReadWriteOnce volume pf-vol-a (claim shop/data-db-0) is still attached to node holder"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := indexOf(t, tc.leases(t)...)
			nodes := []string{"worker-1", "worker-2"}
			first := Filter(now, tc.vols, nodes, x, AllPortals)
			assert.Empty(t, first.Pass)
			require.Len(t, first.Failed, 2)
			assert.Equal(t, tc.want, first.Failed["worker-1"])
			assert.Equal(t, tc.want, first.Failed["worker-2"], "same cause, same message")
			// A retry 10 s later: the reports are 10 s older, the messages unchanged.
			again := Filter(now.Add(10*time.Second), tc.vols, nodes, x, AllPortals)
			assert.Equal(t, first.Failed, again.Failed)
		})
	}
}

func TestExplainNamesNodesAndAgesPerMessage(t *testing.T) {
	refused := map[string]map[string]PortalReport{bsA: {p1: down("connection refused"), p2: ok(time.Millisecond)}}
	good := map[string]map[string]PortalReport{bsA: {p1: ok(time.Millisecond), p2: ok(time.Millisecond)}}
	x := indexOf(t,
		leaseFor(t, "a", reportOf(good), time.Second, ttl),
		leaseFor(t, "c", reportOf(refused), 12*time.Second, ttl),
		leaseFor(t, "d", reportOf(refused), 2*time.Second, ttl),
		leaseFor(t, "e", reportOf(refused), 3*time.Second, ttl),
	)
	nodes := []string{"a", "b", "c", "d", "e"}
	d := Filter(now, []Volume{{VolumeID: "v", Backstore: bsA}}, nodes, x, AllPortals)
	for _, tc := range []struct {
		examples int
		want     string
	}{
		{2, "1/5 nodes pass; 3 × cannot reach portal 10.1.1.5:3260 of backstore 172.16.0.10:7717 (connection refused): c (report 12s old), d (report 2s old), …; " +
			"1 × no reachability report from the petfabric node agent (no petfabric-node-<node> Lease): b"},
		{3, "1/5 nodes pass; 3 × cannot reach portal 10.1.1.5:3260 of backstore 172.16.0.10:7717 (connection refused): c (report 12s old), d (report 2s old), e (report 3s old); " +
			"1 × no reachability report from the petfabric node agent (no petfabric-node-<node> Lease): b"},
	} {
		assert.Equal(t, tc.want, Explain(now, d, nodes, x, tc.examples))
	}
}

// The messages an Index builds when a report arrives follow the report if it is observed
// afterwards (the stale message depends on the TTL Observe sets).
func TestStaleMessageFollowsObserveAfterIndexing(t *testing.T) {
	nr := &NodeReport{Node: "a", RenewTime: now, DeclaredTTL: ttl, Report: reportOf(nil)}
	x := indexOfReports(nr)
	vols := []Volume{{VolumeID: "v", Backstore: bsA}}
	assert.Equal(t, "reachability report has not been observed yet", Filter(now, vols, []string{"a"}, x, AllPortals).Failed["a"])
	nr.Observe(nil, now, 0)
	assert.Equal(t, "reachability report is stale (no renewal seen within its 40s validity); is the petfabric node agent running?",
		Filter(now.Add(ttl+time.Second), vols, []string{"a"}, x, AllPortals).Failed["a"])
}
