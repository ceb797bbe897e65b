package reconcile

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/petfabric/petfabric/pkg/mutate"
)

func TestNewValidates(t *testing.T) {
	_, err := New(Options{})
	require.ErrorContains(t, err, "Options.Client or Options.KubeConfig is required")
	_, err = New(Options{Client: fake.NewClientset(), Mutate: mutate.Config{ClusterID: "9-not-valid"}})
	require.ErrorContains(t, err, "cluster id")
	_, err = New(Options{Client: fake.NewClientset()})
	require.ErrorContains(t, err, "Mutate.ClusterID is required")
	r, err := New(Options{Client: fake.NewClientset(), Mutate: testCfg})
	require.NoError(t, err)
	require.ErrorContains(t, r.Run(context.Background()), "LeaseNamespace")

	reg := prometheus.NewRegistry()
	_, err = New(Options{Client: fake.NewClientset(), Mutate: testCfg, Metrics: reg})
	require.NoError(t, err)
	n, err := testutil.GatherAndCount(reg)
	require.NoError(t, err)
	assert.Positive(t, n)
	_, err = New(Options{Client: fake.NewClientset(), Mutate: testCfg, Metrics: reg})
	require.Error(t, err, "metrics registered twice")
}

// Two candidates on one Lease: exactly one runs the loop; cancelling its context stops its
// loop, releases the lease, and the other takes over and acts.
func TestLeaderElection(t *testing.T) {
	del := storageClass(testClass, corev1.PersistentVolumeReclaimDelete, nil)
	client := fake.NewClientset(namespace(testNS, nil), namespace("petfabric-system", nil), del)
	type candidate struct {
		r      *Reconciler
		rec    *testRecorder
		cancel context.CancelFunc
		done   chan error
	}
	start := func(id string) *candidate {
		c := &candidate{rec: &testRecorder{}, done: make(chan error, 1)}
		var err error
		c.r, err = New(Options{
			Client: client, Mutate: testCfg, Recorder: c.rec,
			LeaseNamespace: "petfabric-system", Identity: id,
			LeaseDuration: 2 * time.Second, RenewDeadline: 1500 * time.Millisecond, RetryPeriod: 100 * time.Millisecond,
		})
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(context.Background())
		c.cancel = cancel
		go func() { c.done <- c.r.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-c.done })
		return c
	}
	a, b := start("a"), start("b")
	waitUntil(t, "a leader", func() bool { return a.r.IsLeader() || b.r.IsLeader() })
	leader, follower := a, b
	if b.r.IsLeader() {
		leader, follower = b, a
	}
	time.Sleep(300 * time.Millisecond)
	assert.False(t, follower.r.IsLeader(), "only one leads")
	assert.Equal(t, 1.0, testutil.ToFloat64(leader.r.metrics.isLeader))
	assert.Equal(t, 0.0, testutil.ToFloat64(follower.r.metrics.isLeader))

	web := statefulSet("web", 2)
	_, err := client.AppsV1().StatefulSets(testNS).Create(context.Background(), web, metav1.CreateOptions{})
	require.NoError(t, err)
	waitUntil(t, "leader creates PVs", func() bool { return testutil.ToFloat64(leader.r.metrics.pvsCreated) == 2 })
	assert.Zero(t, testutil.ToFloat64(follower.r.metrics.pvsCreated), "the follower does nothing")

	leader.cancel()
	require.NoError(t, <-leader.done)
	leader.done <- nil // for the cleanup
	assert.False(t, leader.r.IsLeader())
	waitUntil(t, "the follower takes over", follower.r.IsLeader)
	lease, err := client.CoordinationV1().Leases("petfabric-system").Get(context.Background(), DefaultLeaseName, metav1.GetOptions{})
	require.NoError(t, err)
	assert.Equal(t, follower.r.opts.Identity, *lease.Spec.HolderIdentity)

	_, err = client.AppsV1().StatefulSets(testNS).Update(context.Background(), statefulSet("web", 3), metav1.UpdateOptions{})
	require.NoError(t, err)
	waitUntil(t, "new leader creates the new ordinal's PV", func() bool { return testutil.ToFloat64(follower.r.metrics.pvsCreated) == 1 })
	assert.True(t, pvExistsIn(client, planned(t, web, del, "data", 2).Name))
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func pvExistsIn(client *fake.Clientset, name string) bool {
	_, err := client.CoreV1().PersistentVolumes().Get(context.Background(), name, metav1.GetOptions{})
	return err == nil
}
