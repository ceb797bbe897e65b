package extender

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"
	testingclock "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/pkg/placement"
)

// The freshness attacks of freshness_test.go in pkg/placement, through the informer cache
// and the HTTP handler: renewals are stamped by the cache's clock as Lease events arrive.

var twoPortals = map[string]placement.PortalReport{portal1: up(180), portal2: up(220)}

func volumeObjects() []runtime.Object {
	return []runtime.Object{
		dateraPV("pv-db-0", "shop", "data-db-0", "vol-db-0"),
		&corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "data-db-0"},
			Spec: corev1.PersistentVolumeClaimSpec{VolumeName: "pv-db-0"}},
	}
}

// writeLease creates or updates node's report Lease with the given renewTime (the node's
// clock) and leaseDurationSeconds, and waits until the cache has seen it.
func (f *fixture) writeLease(t *testing.T, node string, renew time.Time, ttlSeconds int32, attached ...string) {
	t.Helper()
	l := reportLeaseAt(t, renew, node, twoPortals, 0, attached...)
	l.Spec.LeaseDurationSeconds = ptr.To(ttlSeconds)
	leases := f.client.CoordinationV1().Leases(ns)
	ctx := context.Background()
	if cur, err := leases.Get(ctx, l.Name, metav1.GetOptions{}); err == nil {
		l.ResourceVersion = cur.ResourceVersion
		_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
		require.NoError(t, err)
	} else {
		_, err = leases.Create(ctx, l, metav1.CreateOptions{})
		require.NoError(t, err)
	}
	waitObserved(t, f.cache, l)
}

func (f *fixture) filterNames(t *testing.T, names ...string) extenderv1.ExtenderFilterResult {
	t.Helper()
	rec := post(t, f.handler, FilterPath, mustJSON(t, extenderv1.ExtenderArgs{Pod: claimPod("db-0", "data-db-0"), NodeNames: &names}))
	var res extenderv1.ExtenderFilterResult
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &res), rec.Body.String())
	return res
}

func TestCacheReportRenewedInTheFutureGoesStaleAfterItsTTL(t *testing.T) {
	f := newFixture(t, HandlerOptions{}, volumeObjects()...)
	f.writeLease(t, "liar", f.clock.Now().Add(time.Hour), 40)
	assert.Equal(t, []string{"liar"}, *f.filterNames(t, "liar").NodeNames)

	f.clock.Step(41 * time.Second)
	res := f.filterNames(t, "liar")
	assert.Empty(t, *res.NodeNames, "a Lease renewed 1h in the future and never again must be stale after its TTL")
	assert.Equal(t, "reachability report is stale (no renewal seen within its 40s validity); is the petfabric node agent running?",
		res.FailedAndUnresolvableNodes["liar"])
}

func TestCacheNodeWithClockBehindStaysFreshWhileRenewing(t *testing.T) {
	f := newFixture(t, HandlerOptions{}, volumeObjects()...)
	for round := range 6 {
		f.writeLease(t, "slow-clock", f.clock.Now().Add(-10*time.Minute), 40)
		f.clock.Step(10 * time.Second)
		res := f.filterNames(t, "slow-clock")
		require.Equal(t, []string{"slow-clock"}, *res.NodeNames, "round %d: %v", round, res.FailedAndUnresolvableNodes)
	}
}

func TestCacheCapsDeclaredLeaseDuration(t *testing.T) {
	f := newFixture(t, HandlerOptions{}, volumeObjects()...)
	f.writeLease(t, "greedy", f.clock.Now(), 86400)
	f.clock.Step(placement.DefaultMaxReportTTL)
	assert.Equal(t, []string{"greedy"}, *f.filterNames(t, "greedy").NodeNames)
	f.clock.Step(time.Second)
	res := f.filterNames(t, "greedy")
	assert.Empty(t, *res.NodeNames, "a Lease declaring a day of freshness must be capped")
	assert.Contains(t, res.FailedAndUnresolvableNodes["greedy"], "within its 2m0s validity")
}

// A configured cap applies, and an unchanged Lease delivered again (what an informer relist
// does) does not freshen the report.
func TestCacheConfiguredCapAndRelist(t *testing.T) {
	client := fake.NewClientset(volumeObjects()...)
	clk := testingclock.NewFakeClock(testNow)
	c, err := NewCache(client, ns, slog.New(slog.NewTextHandler(io.Discard, nil)), CacheOptions{Now: clk.Now, MaxReportTTL: 10 * time.Second})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); c.Shutdown() })
	c.Start(ctx)
	require.Eventually(t, c.Ready, 5*time.Second, 5*time.Millisecond)
	l := reportLeaseAt(t, testNow, "a", twoPortals, 0)
	_, err = client.CoordinationV1().Leases(ns).Create(ctx, l, metav1.CreateOptions{})
	require.NoError(t, err)
	waitObserved(t, c, l)
	report := func() *placement.NodeReport {
		var nr *placement.NodeReport
		c.Read(func(_ placement.Lookup, st placement.State) { nr, _ = st.NodeReport("a") })
		return nr
	}
	assert.Equal(t, 10*time.Second, report().TTL, "leaseDurationSeconds 40 capped at the configured 10s")

	clk.Step(8 * time.Second)
	stored, err := client.CoordinationV1().Leases(ns).Get(ctx, l.Name, metav1.GetOptions{})
	require.NoError(t, err)
	c.setLease(stored) // the informer delivering the same Lease again (relist, resync)
	assert.Equal(t, testNow, report().ObservedAt, "an unchanged renewTime is not a renewal")
	clk.Step(3 * time.Second)
	fresh, stale, _ := c.ReportStats(clk.Now())
	assert.Equal(t, 0, fresh)
	assert.Equal(t, 1, stale)
}
