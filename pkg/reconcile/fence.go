package reconcile

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/petfabric/petfabric/pkg/pvoptions"
)

// The fencing decision, pure: no I/O, no clock of its own. The loop feeds it what it sees
// (the volume's ACL, the node reports it watches, the pods of the volume's claim) and acts on
// its verdicts only after re-checking them against live objects.
//
// Fencing removes a node's initiator from a ReadWriteOnce volume's ACL so that another node
// may attach it. Removing the initiator of a node that still writes would let two nodes write
// one filesystem, so every rule below errs towards not fencing:
//
//   - only ReadWriteOnce volumes (ReadOnlyMany never needs it: any number of nodes may read);
//   - only when a pod of the claim is waiting (Pending) on another node or for one: nobody is
//     fenced for the sake of tidiness;
//   - only an initiator exactly one node report names. An initiator no report names may belong
//     to a host outside the cluster, another cluster on the same backstore, or a node whose
//     agent never ran: nothing tells whether it still writes, so an administrator decides. An
//     initiator two reports name is ambiguous (a cloned node image) and is never fenced either;
//   - only when no pod of the claim is still bound to that node (a pod being deleted counts: a
//     node that lost the API may still be running it);
//   - only when the node's report has not been seen to change for longer than FenceAfter,
//     judged by when this loop observed the change, not by the time the node wrote in it.

// ReportView is one node report as the loop observed it.
type ReportView struct {
	Node string
	// Initiator is the IQN the report names ("" when the report could not be decoded).
	Initiator string
	// ObservedAt is when the loop last saw the report Lease change (its resourceVersion).
	ObservedAt time.Time
}

// PodView is one non-terminated pod of the volume's claim.
type PodView struct {
	Namespace, Name string
	// Node is spec.nodeName ("" while unscheduled).
	Node string
	// Waiting: phase Pending and not being deleted, i.e. it needs the volume and has not got it.
	Waiting bool
}

// FenceInput is everything a fencing decision about one volume depends on.
type FenceInput struct {
	VolumeID string
	// AccessMode is the PV's accessMode option, as written (absent means ReadWriteOnce).
	AccessMode string
	// ACL lists the initiator IQNs in the volume's ACL.
	ACL []string
	// Reports are every node report the loop watches.
	Reports []ReportView
	// Pods are the claim's pods that have not terminated (phase not Succeeded or Failed).
	Pods       []PodView
	Now        time.Time
	FenceAfter time.Duration
}

// FenceVerdict is the decision about one initiator of the ACL.
type FenceVerdict struct {
	Initiator string
	// Node is the node whose report names the initiator ("" when none or several do).
	Node  string
	Fence bool
	// Reason says why (or why not), for events and logs.
	Reason string
	// RetryAfter > 0: only the timeout is missing; decide again after this long.
	RetryAfter time.Duration
	// Unchanged is how long the node's report has been seen unchanged.
	Unchanged time.Duration
	// Waiting is a pod the fence is for (set when Fence).
	Waiting *PodView
}

// DecideFence returns a verdict for each initiator in the ACL, in ACL order. It returns no
// verdicts at all when fencing does not apply to the volume (not ReadWriteOnce, or no pod is
// waiting for it); notApplicable then says why.
func DecideFence(in FenceInput) (verdicts []FenceVerdict, notApplicable string) {
	mode, err := pvoptions.ParseAccessMode(in.AccessMode)
	if err != nil {
		return nil, fmt.Sprintf("volume %s: %v: never fenced", in.VolumeID, err)
	}
	if mode != pvoptions.AccessReadWriteOnce {
		return nil, fmt.Sprintf("volume %s is %s: any number of nodes may attach it", in.VolumeID, mode)
	}
	var waiting []PodView
	for _, p := range in.Pods {
		if p.Waiting {
			waiting = append(waiting, p)
		}
	}
	if len(waiting) == 0 {
		return nil, fmt.Sprintf("no pod of volume %s's claim is waiting for it", in.VolumeID)
	}
	byInitiator := map[string][]ReportView{}
	for _, r := range in.Reports {
		if r.Initiator != "" {
			byInitiator[r.Initiator] = append(byInitiator[r.Initiator], r)
		}
	}
	for _, iqn := range in.ACL {
		verdicts = append(verdicts, judgeInitiator(in, waiting, iqn, byInitiator[iqn]))
	}
	return verdicts, ""
}

// judgeInitiator is the verdict on one initiator of the ACL, given the reports that name it
// (holders) and the claim's waiting pods.
func judgeInitiator(in FenceInput, waiting []PodView, iqn string, holders []ReportView) FenceVerdict {
	v := FenceVerdict{Initiator: iqn}
	switch len(holders) {
	case 0:
		v.Reason = fmt.Sprintf("no node report names initiator %s: it may be a host outside this cluster, so it is left to an administrator", iqn)
		return v
	case 1:
	default:
		nodes := make([]string, 0, len(holders))
		for _, h := range holders {
			nodes = append(nodes, h.Node)
		}
		slices.Sort(nodes)
		v.Reason = fmt.Sprintf("initiator %s is named by the reports of several nodes (%s): ambiguous, never fenced", iqn, strings.Join(nodes, ", "))
		return v
	}
	h := holders[0]
	v.Node = h.Node
	if i := slices.IndexFunc(in.Pods, func(p PodView) bool { return p.Node == h.Node }); i >= 0 {
		v.Reason = fmt.Sprintf("pod %s/%s of the claim is still on node %s", in.Pods[i].Namespace, in.Pods[i].Name, h.Node)
		return v
	}
	i := slices.IndexFunc(waiting, func(p PodView) bool { return p.Node != h.Node })
	if i < 0 {
		v.Reason = fmt.Sprintf("no pod of the claim waits on a node other than %s", h.Node)
		return v
	}
	v.Unchanged = in.Now.Sub(h.ObservedAt)
	if v.Unchanged <= in.FenceAfter {
		v.Reason = fmt.Sprintf("node %s's report changed %s ago (fencing needs more than %s)", h.Node, v.Unchanged.Round(time.Second), in.FenceAfter)
		v.RetryAfter = in.FenceAfter - v.Unchanged + 100*time.Millisecond
		return v
	}
	v.Fence = true
	v.Waiting = &waiting[i]
	where := "to be scheduled"
	if v.Waiting.Node != "" {
		where = "on node " + v.Waiting.Node
	}
	v.Reason = fmt.Sprintf("node %s's report unchanged for %s (fence-after %s), no pod of the claim on it, pod %s/%s waiting %s",
		h.Node, v.Unchanged.Round(time.Second), in.FenceAfter, v.Waiting.Namespace, v.Waiting.Name, where)
	return v
}
