package faults

import (
	"context"
	"fmt"
	"github.com/petfabric/petfabric/test/fixtures"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/leaderelection"

	"github.com/petfabric/petfabric/pkg/mutate"
	"github.com/petfabric/petfabric/pkg/reconcile"
)

// TestFaults injects the faults one after another into one control plane and one
// StatefulSet "web", each ending in the steady state (every claim Bound to its own PV, every
// pet Running, no extra PV):
//  1. the admission webhook killed (failurePolicy Ignore) while the set is created: admitted
//     unmutated, its claims wait, the surviving replica's reconcile loop makes the PVs;
//  2. the reconcile leader killed right after a scale-up it must serve: the other replica
//     takes the Lease once it expires (within the lease duration plus two jittered retry
//     periods of the kill) and finishes the scale-up;
//  3. kube-apiserver restarted mid-scale: every program reconnects and the set completes;
//  4. the extender down (not ignorable): the new pet waits, kube-scheduler reports a
//     SchedulerError and retries with backoff (not the 5-minute unschedulable flush), and it
//     is placed once the extender is back;
//  5. a node agent killed: its report goes stale after the extender's --max-report-ttl and
//     the next pets avoid the node; the agent restarted, the node is used again.
func TestFaults(t *testing.T) {
	began := time.Now()
	e := newEnv(t)
	t.Logf("environment ready in %s", time.Since(began).Round(time.Millisecond))
	ctx, cancel := context.WithTimeout(e.ctx, 4*time.Minute)
	defer cancel()
	require.NoError(t, wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		return e.leader(ctx) != "", nil
	}), "no reconcile leader")
	t.Logf("reconcile leader: %s", e.leader(ctx))
	replicas := 0

	ok := t.Run("webhook killed under Ignore: the loop heals", func(t *testing.T) {
		admission := e.webhooks[e.webhookHooks]
		admission.kill(t)
		killed := time.Now()
		_, err := e.cs.AppsV1().StatefulSets(appNS).Create(ctx, fixtures.PetSet(appNS, "web", 3, class), metav1.CreateOptions{})
		require.NoError(t, err, "failurePolicy Ignore admits while the webhook is down")
		replicas = 3
		sts, err := e.cs.AppsV1().StatefulSets(appNS).Get(ctx, "web", metav1.GetOptions{})
		require.NoError(t, err)
		assert.Empty(t, sts.Spec.VolumeClaimTemplates[0].Annotations[mutate.AnnStatefulSet], "admitted unmutated")
		pods := e.steady(t, "web", replicas, time.Minute)
		t.Logf("healed by the surviving replica's loop (leader now %s): %d pets Running %s after the kill", e.leader(ctx), len(pods), time.Since(killed).Round(time.Millisecond))
		assert.NotEqual(t, e.webhookHooks, e.leader(ctx), "the killed replica cannot be the leader")
		admission.start(t)
		e.waitAdmission(t)
	})
	require.True(t, ok, "the later faults build on the first")

	t.Run("reconcile leader killed mid-reconcile: the other replica takes over within the lease", func(t *testing.T) {
		old := e.leader(ctx)
		require.Contains(t, e.webhooks, old)
		var next string
		for id := range e.webhooks {
			if id != old {
				next = id
			}
		}
		e.scale(t, "web", 5) // the scale subresource is not hooked: the loop makes ordinals 3-4's PVs
		replicas = 5
		lease, err := e.cs.CoordinationV1().Leases(releaseNS).Get(ctx, reconcile.DefaultLeaseName, metav1.GetOptions{})
		require.NoError(t, err)
		e.webhooks[old].kill(t)
		killed := time.Now()
		renewed := lease.Spec.RenewTime.Time
		made := 0
		for _, claim := range []string{"data-web-3", "data-web-4"} {
			if _, err := e.cs.CoreV1().PersistentVolumes().Get(ctx, mutate.PVName(appNS, claim), metav1.GetOptions{}); err == nil {
				made++
			}
		}
		require.NoError(t, wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			return e.leader(ctx) == next, nil
		}), "%s never took the Lease", next)
		takeover := time.Since(killed)
		t.Logf("%s killed (it had made %d of the 2 new PVs); %s took the Lease %s after the kill, %s after the last renewal it saw written",
			old, made, next, takeover.Round(time.Millisecond), time.Since(renewed).Round(time.Millisecond))
		// client-go's elector counts the lease duration from when the follower observed the
		// last renewal, and polls every retry period stretched by up to JitterFactor (2s to
		// 4.4s): the follower may see the last renewal one jittered period late and acquire one
		// jittered period after the expiry. Lease duration + one retry period (17s) is
		// therefore not a bound; this is.
		bound := reconcile.DefaultLeaseDuration + 2*time.Duration(float64(reconcile.DefaultRetryPeriod)*(1+leaderelection.JitterFactor))
		assert.LessOrEqual(t, takeover, bound, "takeover within the lease duration plus two jittered retry periods")
		assert.GreaterOrEqual(t, takeover+killed.Sub(renewed), reconcile.DefaultLeaseDuration-time.Second, "not before the lease expired")
		pods := e.steady(t, "web", replicas, time.Minute)
		t.Logf("scale-up finished %s after the kill (%d pets)", time.Since(killed).Round(time.Millisecond), len(pods))
		e.webhooks[old].start(t)
		e.waitAdmission(t)
		assert.Equal(t, next, e.leader(ctx), "the restarted replica follows")
	})

	t.Run("apiserver restarted mid-scale: every program reconnects", func(t *testing.T) {
		e.scale(t, "web", 7)
		replicas = 7
		began := time.Now()
		require.NoError(t, e.c.RestartAPIServer(ctx))
		t.Logf("kube-apiserver back in %s", time.Since(began).Round(time.Millisecond))
		pods := e.steady(t, "web", replicas, 2*time.Minute)
		t.Logf("set complete (%d pets) %s after the restart began", len(pods), time.Since(began).Round(time.Millisecond))
		for _, p := range e.all() {
			assert.True(t, p.running(), "%s survived the restart", p.name)
		}
		for _, n := range nodes {
			e.waitReport(t, n, true, 30*time.Second)
		}
		// The loop reconnected too: another scale-up (its work alone) completes.
		e.scale(t, "web", 8)
		replicas = 8
		e.steady(t, "web", replicas, time.Minute)
	})

	t.Run("extender down: the pet waits with backoff and is placed when it returns", func(t *testing.T) {
		e.extender.kill(t)
		// Hold the extender's address and count the scheduler's attempts: each one is a
		// connection that gets closed before TLS completes.
		l, err := net.Listen("tcp", e.extenderAddr)
		require.NoError(t, err)
		var mu sync.Mutex
		var attempts []time.Time
		go func() {
			for {
				conn, err := l.Accept()
				if err != nil {
					return
				}
				mu.Lock()
				attempts = append(attempts, time.Now())
				mu.Unlock()
				conn.Close()
			}
		}()
		e.scale(t, "web", 9)
		replicas = 9
		pet := "web-8"
		// Until the pet's claim is Bound the scheduler stops at its own volume check
		// ("unbound immediate PersistentVolumeClaims") and never calls the extender; on a loaded
		// machine the claim can take seconds (the PV comes from the webhook or its loop).
		claim := "data-" + pet
		require.NoError(t, wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			c, err := e.cs.CoreV1().PersistentVolumeClaims(appNS).Get(ctx, claim, metav1.GetOptions{})
			return err == nil && c.Status.Phase == corev1.ClaimBound, nil
		}), "claim %s never Bound", claim)
		bound := time.Now()
		var cond corev1.PodCondition
		require.NoError(t, wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			p, err := e.cs.CoreV1().Pods(appNS).Get(ctx, pet, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
					cond = c
					return c.Reason == corev1.PodReasonSchedulerError, nil
				}
			}
			return false, nil
		}), "%s never reported a scheduler error once its claim was Bound (last condition %s: %s)", pet, cond.Reason, cond.Message)
		assert.Contains(t, cond.Message, e.extenderAddr, "the condition names the extender call")
		// kube-scheduler retries a pod that hit an error with its backoff (doubling from 1 s to
		// 10 s per attempt, the attempts before the claim was Bound included), not after the
		// 5-minute unschedulable flush: 12 s hold at least one retry.
		time.Sleep(12 * time.Second)
		p, err := e.cs.CoreV1().Pods(appNS).Get(ctx, pet, metav1.GetOptions{})
		require.NoError(t, err)
		assert.Empty(t, p.Spec.NodeName, "the pet waits while the extender cannot answer")
		events := e.events(ctx, t, pet)
		assert.Contains(t, events, "FailedScheduling")
		assert.Contains(t, events, e.extenderAddr)
		mu.Lock()
		var tries []time.Time
		for _, at := range attempts {
			if at.After(bound) {
				tries = append(tries, at)
			}
		}
		mu.Unlock()
		var gaps []string
		for i := 1; i < len(tries); i++ {
			gaps = append(gaps, tries[i].Sub(tries[i-1]).Round(100*time.Millisecond).String())
		}
		t.Logf("scheduler attempts while the extender was down, after the claim was Bound: %d, gaps %s; condition %s: %s", len(tries), strings.Join(gaps, " "), cond.Reason, cond.Message)
		assert.GreaterOrEqual(t, len(tries), 2, "retried with backoff, not parked until the unschedulable flush")
		require.NoError(t, l.Close())

		back := time.Now()
		e.extender.start(t)
		e.steady(t, "web", replicas, time.Minute)
		t.Logf("%s placed %s after the extender was back", pet, time.Since(back).Round(time.Millisecond))
	})

	t.Run("node agent killed: its report goes stale and new pets avoid the node", func(t *testing.T) {
		const victim = "node-c"
		before := e.steady(t, "web", replicas, 30*time.Second)
		e.agents[victim].kill(t)
		killed := time.Now()
		renewed := e.waitReport(t, victim, false, 30*time.Second)
		t.Logf("report of %s stale %s after the kill (last renewal %s before the kill, extender cap %s)",
			victim, time.Since(killed).Round(time.Millisecond), killed.Sub(renewed).Round(time.Millisecond), maxReportTTL)
		onVictim := 0
		for _, p := range before {
			if p.Spec.NodeName == victim {
				onVictim++
			}
		}
		e.scale(t, "web", 12)
		replicas = 12
		after := e.steady(t, "web", replicas, time.Minute)
		perNode := map[string]int{}
		for name, p := range after {
			perNode[p.Spec.NodeName]++
			if _, old := before[name]; !old {
				assert.NotEqual(t, victim, p.Spec.NodeName, "new pet %s avoids the node with a stale report", name)
			}
		}
		t.Logf("pets per node after the scale-up: %v (%d on %s before)", perNode, onVictim, victim)
		assert.Equal(t, onVictim, perNode[victim], "the pets already there stay")

		e.agents[victim].start(t)
		e.waitReport(t, victim, true, 30*time.Second)
		e.scale(t, "web", 13)
		replicas = 13
		after = e.steady(t, "web", replicas, time.Minute)
		t.Logf("agent restarted: web-12 on %s", after["web-12"].Spec.NodeName)
	})

	// Nothing lost: the set is whole and every program is still up.
	e.steady(t, "web", replicas, 30*time.Second)
	for _, p := range e.all() {
		assert.True(t, p.running(), "%s is running at the end", p.name)
	}
	t.Logf("all faults in %s", time.Since(began).Round(time.Millisecond))
}

// all returns every petfabric process of the environment.
func (e *env) all() []*proc {
	out := []*proc{e.extender}
	for _, p := range e.webhooks {
		out = append(out, p)
	}
	for _, p := range e.agents {
		out = append(out, p)
	}
	return out
}

// events returns the pod's events, one per line (reason: message).
func (e *env) events(ctx context.Context, t *testing.T, pod string) string {
	t.Helper()
	list, err := e.cs.CoreV1().Events(appNS).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + pod})
	require.NoError(t, err)
	var b strings.Builder
	for _, ev := range list.Items {
		fmt.Fprintf(&b, "%s (x%d): %s\n", ev.Reason, max(ev.Count, 1), ev.Message)
	}
	return b.String()
}
