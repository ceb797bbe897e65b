package reconcile

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/petfabric/petfabric/pkg/pvoptions"
)

// The fencing decision, rule by rule. A fence removes a node's initiator from a ReadWriteOnce
// volume's ACL; fencing a live writer would let two nodes write one filesystem, so every case
// that is not clearly a dead holder with a pod waiting elsewhere must come out "no".
func TestDecideFence(t *testing.T) {
	const (
		iqnA = "iqn.1993-08.org.debian:01:node-a"
		iqnB = "iqn.1993-08.org.debian:01:node-b"
		iqnX = "iqn.1993-08.org.debian:01:outside"
	)
	now := t0
	after := 2 * time.Minute
	dead := ReportView{Node: "node-a", Initiator: iqnA, ObservedAt: now.Add(-after - time.Second)}
	fresh := ReportView{Node: "node-a", Initiator: iqnA, ObservedAt: now.Add(-10 * time.Second)}
	nodeB := ReportView{Node: "node-b", Initiator: iqnB, ObservedAt: now.Add(-5 * time.Second)}
	waitingOnB := PodView{Namespace: "app", Name: "db-0", Node: "node-b", Waiting: true}
	waitingUnscheduled := PodView{Namespace: "app", Name: "db-0", Waiting: true}

	type want struct {
		fence      bool
		reason     string
		retryAfter time.Duration
	}
	tests := []struct {
		name          string
		in            FenceInput
		notApplicable string
		want          map[string]want // by initiator
	}{
		{name: "dead holder, pod waiting on another node: fenced",
			in:   FenceInput{ACL: []string{iqnA}, Reports: []ReportView{dead, nodeB}, Pods: []PodView{waitingOnB}},
			want: map[string]want{iqnA: {fence: true, reason: "node node-a's report unchanged for 2m1s (fence-after 2m0s), no pod of the claim on it, pod app/db-0 waiting on node node-b"}}},
		{name: "dead holder, pod waiting to be scheduled: fenced",
			in:   FenceInput{ACL: []string{iqnA}, Reports: []ReportView{dead}, Pods: []PodView{waitingUnscheduled}},
			want: map[string]want{iqnA: {fence: true, reason: "waiting to be scheduled"}}},
		{name: "contract v1 PV (no accessMode): ReadWriteOnce, fenced like any",
			in:   FenceInput{AccessMode: "", ACL: []string{iqnA}, Reports: []ReportView{dead}, Pods: []PodView{waitingOnB}},
			want: map[string]want{iqnA: {fence: true}}},
		{name: "live holder (report fresh): never fenced, looked at again when the timeout could pass",
			in:   FenceInput{ACL: []string{iqnA}, Reports: []ReportView{fresh, nodeB}, Pods: []PodView{waitingOnB}},
			want: map[string]want{iqnA: {reason: "node node-a's report changed 10s ago (fencing needs more than 2m0s)", retryAfter: after - 10*time.Second + 100*time.Millisecond}}},
		{name: "timeout exactly reached, not passed: not fenced",
			in:   FenceInput{ACL: []string{iqnA}, Reports: []ReportView{{Node: "node-a", Initiator: iqnA, ObservedAt: now.Add(-after)}}, Pods: []PodView{waitingOnB}},
			want: map[string]want{iqnA: {reason: "fencing needs more than", retryAfter: 100 * time.Millisecond}}},
		{name: "dead report but a pod of the claim still on the node: never fenced",
			in: FenceInput{ACL: []string{iqnA}, Reports: []ReportView{dead}, Pods: []PodView{
				{Namespace: "app", Name: "db-0-old", Node: "node-a"}, waitingOnB}},
			want: map[string]want{iqnA: {reason: "pod app/db-0-old of the claim is still on node node-a"}}},
		{name: "a pod on the node that is itself waiting (restarting there): never fenced",
			in:   FenceInput{ACL: []string{iqnA}, Reports: []ReportView{dead}, Pods: []PodView{{Namespace: "app", Name: "db-0", Node: "node-a", Waiting: true}}},
			want: map[string]want{iqnA: {reason: "pod app/db-0 of the claim is still on node node-a"}}},
		{name: "an initiator no report names (a host outside the cluster): never fenced",
			in:   FenceInput{ACL: []string{iqnX}, Reports: []ReportView{dead, nodeB}, Pods: []PodView{waitingOnB}},
			want: map[string]want{iqnX: {reason: "no node report names initiator " + iqnX}}},
		{name: "an initiator two reports name (cloned node image): never fenced",
			in: FenceInput{ACL: []string{iqnA}, Reports: []ReportView{dead, {Node: "node-c", Initiator: iqnA, ObservedAt: dead.ObservedAt}},
				Pods: []PodView{waitingOnB}},
			want: map[string]want{iqnA: {reason: "named by the reports of several nodes (node-a, node-c)"}}},
		{name: "a report that could not be decoded names no initiator",
			in:   FenceInput{ACL: []string{iqnA}, Reports: []ReportView{{Node: "node-a", ObservedAt: dead.ObservedAt}}, Pods: []PodView{waitingOnB}},
			want: map[string]want{iqnA: {reason: "no node report names"}}},
		{name: "two holders: only the dead one is fenced",
			in: FenceInput{ACL: []string{iqnA, iqnB}, Reports: []ReportView{dead, nodeB},
				Pods: []PodView{{Namespace: "app", Name: "db-0", Node: "node-c", Waiting: true}}},
			want: map[string]want{iqnA: {fence: true}, iqnB: {reason: "node node-b's report changed 5s ago", retryAfter: after - 5*time.Second + 100*time.Millisecond}}},
		{name: "no pod waiting: fencing does not apply (nobody is fenced for tidiness)",
			in:            FenceInput{ACL: []string{iqnA}, Reports: []ReportView{dead}, Pods: []PodView{{Namespace: "app", Name: "db-0", Node: "node-b"}}},
			notApplicable: "no pod of volume v1's claim is waiting for it"},
		{name: "a waiting pod being deleted is not waiting", in: FenceInput{ACL: []string{iqnA}, Reports: []ReportView{dead}},
			notApplicable: "no pod of volume v1's claim is waiting"},
		{name: "ReadOnlyMany: never fenced",
			in:            FenceInput{AccessMode: pvoptions.AccessReadOnlyMany, ACL: []string{iqnA}, Reports: []ReportView{dead}, Pods: []PodView{waitingOnB}},
			notApplicable: "volume v1 is ReadOnlyMany: any number of nodes may attach it"},
		{name: "unknown accessMode: never fenced",
			in:            FenceInput{AccessMode: "ReadWriteMany", ACL: []string{iqnA}, Reports: []ReportView{dead}, Pods: []PodView{waitingOnB}},
			notApplicable: `option accessMode "ReadWriteMany"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in
			in.VolumeID, in.Now, in.FenceAfter = "v1", now, after
			verdicts, why := DecideFence(in)
			if tc.notApplicable != "" {
				assert.Empty(t, verdicts)
				assert.Contains(t, why, tc.notApplicable)
				return
			}
			require.Empty(t, why)
			require.Len(t, verdicts, len(in.ACL), "one verdict per ACL entry")
			for i, v := range verdicts {
				assert.Equal(t, in.ACL[i], v.Initiator, "in ACL order")
				w := tc.want[v.Initiator]
				assert.Equal(t, w.fence, v.Fence, "%s: %s", v.Initiator, v.Reason)
				assert.Contains(t, v.Reason, w.reason)
				assert.Equal(t, w.retryAfter, v.RetryAfter)
				if v.Fence {
					require.NotNil(t, v.Waiting)
					assert.NotEqual(t, v.Node, v.Waiting.Node, "the pod it is for waits elsewhere")
				}
			}
		})
	}
}
