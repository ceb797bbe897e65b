package extender

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/petfabric/petfabric/pkg/placement"
)

// nodeReport builds an observed report: portals of backstore "bs" by OK state, attached
// volumes, seen at `seen` with a one-minute TTL.
func nodeReport(seen time.Time, portals map[string]bool, attached ...string) *placement.NodeReport {
	ps := map[string]placement.PortalReport{}
	for p, ok := range portals {
		if ok {
			ps[p] = placement.PortalReport{OK: true, RTTMicros: 100}
		} else {
			ps[p] = placement.PortalReport{Error: "connection refused"}
		}
	}
	r := &placement.Report{Version: placement.ReportVersion, Initiator: "iqn.x", ProbedAt: seen,
		Backstores: map[string]placement.BackstoreReport{"bs": {Portals: ps}}, Attached: attached}
	nr := &placement.NodeReport{Node: "n1", Report: r, RenewTime: seen, ObservedAt: seen, DeclaredTTL: time.Minute, TTL: time.Minute,
		Attached: map[string]struct{}{}}
	for _, v := range attached {
		nr.Attached[v] = struct{}{}
	}
	return nr
}

func TestReportImproved(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	both := map[string]bool{"a:3260": true, "b:3260": true}
	oneDown := map[string]bool{"a:3260": false, "b:3260": true}
	bothDown := map[string]bool{"a:3260": false, "b:3260": false}
	onlyB := map[string]bool{"b:3260": true}
	fresh := func(portals map[string]bool, attached ...string) *placement.NodeReport {
		return nodeReport(now, portals, attached...)
	}
	stale := nodeReport(now.Add(-2*time.Minute), both)
	unreadable := &placement.NodeReport{Node: "n1", Err: errors.New("bad JSON"), ObservedAt: now, TTL: time.Minute}
	otherBackstore := fresh(both)
	otherBackstore.Report.Backstores = map[string]placement.BackstoreReport{"other": otherBackstore.Report.Backstores["bs"]}

	for _, tc := range []struct {
		name       string
		prev, next *placement.NodeReport
		want       bool
	}{
		{"first report", nil, fresh(both), true},
		{"unreadable turns readable", unreadable, fresh(oneDown), true},
		{"stale turns fresh", stale, fresh(both), true},
		{"portal recovers", fresh(oneDown), fresh(both), true},
		{"one of two down portals recovers", fresh(bothDown), fresh(oneDown), true},
		{"failing portal removed from the report", fresh(oneDown), fresh(onlyB), true},
		{"backstore appears", otherBackstore, fresh(both), true},
		{"RWO holder lets go", fresh(both, "v1", "v2"), fresh(both, "v2"), true},
		{"first report reaches nothing", nil, fresh(bothDown), false},
		{"stale turns fresh but reaches nothing", nodeReport(now.Add(-2*time.Minute), oneDown), fresh(bothDown), false},
		{"same content renewed", fresh(both, "v1"), fresh(both, "v1"), false},
		{"portal goes down", fresh(both), fresh(oneDown), false},
		{"volume attached", fresh(both), fresh(both, "v1"), false},
		{"report deleted", fresh(both), nil, false},
		{"report turns unreadable", fresh(both), unreadable, false},
		{"new report not fresh (never renewed)", nil, func() *placement.NodeReport {
			nr := fresh(both)
			nr.ObservedAt = time.Time{}
			return nr
		}(), false},
		{"recovery to a report that is itself stale", fresh(oneDown), nodeReport(now.Add(-2*time.Minute), both), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, reportImproved(tc.prev, tc.next, now))
		})
	}
}

// writes counts the trigger object's create and patch calls on a fake clientset.
func writes(cs *fake.Clientset) (creates, patches int) {
	for _, a := range cs.Actions() {
		if a.GetResource().Resource != "csistoragecapacities" {
			continue
		}
		switch a.GetVerb() {
		case "create":
			creates++
		case "patch":
			patches++
		}
	}
	return creates, patches
}

// startRequeuer runs a Requeuer on a fake clock and fake clientset until the test ends.
func startRequeuer(t *testing.T, cs *fake.Clientset) (*Requeuer, *clocktesting.FakeClock, *Metrics) {
	t.Helper()
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC))
	m := NewMetrics()
	r, err := NewRequeuer(cs, RequeueOptions{Namespace: "petfabric", Coalesce: 250 * time.Millisecond, MinInterval: time.Second,
		Clock: clk, Metrics: m, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return r, clk, m
}

// waitTimer waits until Run sleeps on the clock, then advances it by d.
func waitTimer(t *testing.T, clk *clocktesting.FakeClock, d time.Duration) {
	t.Helper()
	require.Eventually(t, clk.HasWaiters, 5*time.Second, time.Millisecond)
	clk.Step(d)
}

func waitWrites(t *testing.T, cs *fake.Clientset, m *Metrics, result string, n int) {
	t.Helper()
	require.Eventually(t, func() bool {
		return testutil.ToFloat64(m.requeue.triggers.WithLabelValues(result)) == float64(n)
	}, 5*time.Second, time.Millisecond, "want %d %s trigger writes; actions %v", n, result, cs.Actions())
}

// TestRequeuerCoalesces: a burst of recoveries is one write after the coalescing delay; the
// first write creates the object, the next patches it; a recovery right after a write waits
// out the minimum interval.
func TestRequeuerCoalesces(t *testing.T) {
	cs := fake.NewClientset()
	r, clk, m := startRequeuer(t, cs)

	for i := range 50 {
		r.Notify(fmt.Sprintf("n%d", i))
	}
	waitTimer(t, clk, 249*time.Millisecond)
	time.Sleep(20 * time.Millisecond)
	c, p := writes(cs)
	require.Zero(t, c+p, "no write before the coalescing delay ends")
	clk.Step(time.Millisecond)
	waitWrites(t, cs, m, "ok", 1)
	c, p = writes(cs)
	require.Equal(t, 1, c, "the missing object is created")
	require.Equal(t, 1, p, "after a patch that found nothing")
	require.Equal(t, 1.0, testutil.ToFloat64(m.requeue.signals.WithLabelValues("scheduled")))
	require.Equal(t, 49.0, testutil.ToFloat64(m.requeue.signals.WithLabelValues("coalesced")))

	obj, err := cs.StorageV1().CSIStorageCapacities("petfabric").Get(context.Background(), DefaultRequeueObject, metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, RequeueStorageClass, obj.StorageClassName)
	require.Nil(t, obj.NodeTopology, "no topology: the object says nothing about any node")
	first := obj.Annotations[RequeueAnnotation]
	require.NotEmpty(t, first)

	// The next recovery: the write waits for the minimum interval (1 s) since the last.
	r.Notify("n1")
	waitTimer(t, clk, 999*time.Millisecond)
	time.Sleep(20 * time.Millisecond)
	_, p = writes(cs)
	require.Equal(t, 1, p, "rate limit: no second write within the minimum interval")
	clk.Step(time.Millisecond)
	waitWrites(t, cs, m, "ok", 2)
	c, p = writes(cs)
	require.Equal(t, 1, c)
	require.Equal(t, 2, p, "the existing object is patched")
	obj, err = cs.StorageV1().CSIStorageCapacities("petfabric").Get(context.Background(), DefaultRequeueObject, metav1.GetOptions{})
	require.NoError(t, err)
	require.NotEqual(t, first, obj.Annotations[RequeueAnnotation], "each write changes the object")
}

// TestRequeuerWriteFailure: a refused write is counted and logged, Notify never blocks, and
// the next recovery writes again.
func TestRequeuerWriteFailure(t *testing.T) {
	cs := fake.NewClientset()
	var deny atomic.Bool
	deny.Store(true)
	cs.PrependReactor("*", "csistoragecapacities", func(k8stesting.Action) (bool, runtime.Object, error) {
		if deny.Load() {
			return true, nil, errors.New("forbidden")
		}
		return false, nil, nil
	})
	r, clk, m := startRequeuer(t, cs)
	r.Notify("n1")
	waitTimer(t, clk, 250*time.Millisecond)
	waitWrites(t, cs, m, "error", 1)

	deny.Store(false)
	notified := make(chan struct{})
	go func() {
		for range 1000 {
			r.Notify("n2")
		}
		close(notified)
	}()
	select {
	case <-notified:
	case <-time.After(5 * time.Second):
		t.Fatal("Notify blocked")
	}
	waitTimer(t, clk, time.Second)
	waitWrites(t, cs, m, "ok", 1)
}

func TestNewRequeuerRejectsBadOptions(t *testing.T) {
	_, err := NewRequeuer(fake.NewClientset(), RequeueOptions{})
	require.ErrorContains(t, err, "namespace is required")
	_, err = NewRequeuer(fake.NewClientset(), RequeueOptions{Namespace: "x", Coalesce: -time.Second})
	require.ErrorContains(t, err, "must not be negative")
}
