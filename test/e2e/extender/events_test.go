package extendere2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// TestFailedSchedulingEventAggregates: a pet that cannot be placed for a reason that does
// not change gets one FailedScheduling Event whose series count grows across the
// scheduler's retries, and whose message counts the nodes per reason. Two nodes refuse the
// same portal with reports of different ages, a third has no report. Before the messages
// were made node- and age-free, every retry wrote a new Event object (the messages named
// each node and its report's age, so no two were equal).
//
// What the scheduler does with equal messages (client-go's events/v1 broadcaster, seen
// here): events are keyed by their message and by the full reference to the pod, its
// resourceVersion included. The first attempt's event regards the pod as created; the
// scheduler then writes the pod's PodScheduled=False condition, so the next attempt's
// event regards a newer resourceVersion and is a second object. From then on the pod does
// not change: the next equal event turns that object into a series (series.count 2,
// written at once), and later ones only raise the count in the scheduler's memory, which
// it writes back every 30 minutes. So the test asserts: at most two objects, one with a
// series, and no new object over three further attempts.
func TestFailedSchedulingEventAggregates(t *testing.T) {
	e := start(t, true, "worker-a", "worker-b", "worker-c")
	e.report(t, "worker-a", unreachable, time.Second, time.Hour)
	e.report(t, "worker-b", unreachable, 20*time.Second, time.Hour)
	e.volume(t, "stuck", "pf-stuck", nil, true)
	// The pod comes once its claim is bound: an unbound claim has its own FailedScheduling
	// event (the scheduler's, before the extender is asked), which is not what this tests.
	require.NoError(t, wait.PollUntilContextTimeout(e.ctx, 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		c, err := e.client.CoreV1().PersistentVolumeClaims(appNS).Get(ctx, "stuck", metav1.GetOptions{})
		return err == nil && c.Status.Phase == corev1.ClaimBound, nil
	}), "claim stuck never bound to its pre-bound PV")
	e.pod(t, "stuck", "stuck")

	const want = "0/3 nodes are available: " +
		"1 no reachability report from the petfabric node agent (no petfabric-node-<node> Lease), " +
		"2 cannot reach portal 10.1.1.5:3260 of backstore 172.16.0.10:7717 (connection refused)."
	first := e.failedScheduling(t, "stuck", want)
	t.Logf("FailedScheduling: %s", first)

	// The extender logs one "filtered nodes" line per scheduling attempt.
	logFile := filepath.Join(e.c.Dir, "extender.log")
	attempts := func() int {
		b, err := os.ReadFile(logFile)
		require.NoError(t, err)
		n := 0
		for _, line := range strings.Split(string(b), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "filtered nodes" && m["pod"] == appNS+"/stuck" {
				n++
			}
		}
		return n
	}
	events := func() []corev1.Event {
		list, err := e.client.CoreV1().Events(appNS).List(e.ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=stuck,reason=FailedScheduling"})
		require.NoError(t, err)
		return list.Items
	}
	// retry drives the scheduler until the extender has seen n attempts: a node update
	// moves the pod back to the active queue (after its backoff).
	retry := func(n int) {
		require.NoError(t, wait.PollUntilContextTimeout(e.ctx, 2*time.Second, 90*time.Second, true, func(context.Context) (bool, error) {
			if attempts() >= n {
				return true, nil
			}
			e.touchNode(t, "worker-a")
			return false, nil
		}), "the scheduler did not retry the pod (%d attempts seen, want %d)", attempts(), n)
	}
	var series *corev1.Event
	require.NoError(t, wait.PollUntilContextTimeout(e.ctx, 2*time.Second, 90*time.Second, true, func(context.Context) (bool, error) {
		for _, ev := range events() {
			if ev.Series != nil {
				series = &ev
				return true, nil
			}
		}
		e.touchNode(t, "worker-a")
		return false, nil
	}), "no FailedScheduling event became a series; events: %+v", events())
	objects, before := len(events()), attempts()
	retry(before + 3)
	t.Logf("scheduling attempts seen by the extender: %d; event objects: %d", attempts(), objects)

	evs := events()
	assert.Len(t, evs, objects, "three more attempts, no new event object")
	assert.LessOrEqual(t, len(evs), 2, "one event object per pod version, not per attempt")
	names := map[string]bool{}
	for _, ev := range evs {
		names[ev.Name] = true
		assert.True(t, strings.HasPrefix(ev.Message, want), "message %q", ev.Message)
		for _, node := range []string{"worker-a", "worker-b", "worker-c"} {
			assert.NotContains(t, ev.Message, node, "the event message names no node (the extender's log does)")
		}
		assert.NotContains(t, ev.Message, " old", "the event message carries no report age")
	}
	assert.True(t, names[series.Name], "the series is still there: %v", names)
	assert.GreaterOrEqual(t, series.Series.Count, int32(2))
	e.requireUnscheduled(t, "stuck")
}
