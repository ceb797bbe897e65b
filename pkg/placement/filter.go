package placement

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"
)

// State is the extender's view of the node reports and of the volumes' pets. Callers hold
// whatever lock makes it consistent for the duration of one Filter or Prioritize call.
type State interface {
	// NodeReport returns the node's report Lease, or false when it has none.
	NodeReport(node string) (*NodeReport, bool)
	// Holders returns the nodes whose reports (fresh or not) list volumeID as attached.
	Holders(volumeID string) []string
	// PetVolumes returns the volumes of every pet of one StatefulSet (from PV labels).
	PetVolumes(namespace, statefulSet string) []PetVolume
}

// PetVolume is one volume of a StatefulSet's pet.
type PetVolume struct {
	VolumeID string
	Ordinal  int
}

// PortalPolicy says how many of a backstore's portals a node must reach.
type PortalPolicy int

const (
	// AllPortals (the default) fails a node when any portal of a volume's backstore is
	// unreachable: Datera exports each volume on every portal, and a node that misses one
	// loses multipath redundancy and sees login timeouts on mount.
	AllPortals PortalPolicy = iota
	// AnyPortal accepts a node that reaches at least one portal.
	AnyPortal
)

// ParsePortalPolicy parses "all" or "any".
func ParsePortalPolicy(s string) (PortalPolicy, error) {
	switch s {
	case "all", "":
		return AllPortals, nil
	case "any":
		return AnyPortal, nil
	}
	return 0, fmt.Errorf("portal policy %q: want all or any", s)
}

// Reason classifies why a node failed, for metrics (the human message is separate).
type Reason string

// Filter reasons.
const (
	ReasonPass        Reason = "pass"
	ReasonNoReport    Reason = "no_report"
	ReasonBadReport   Reason = "bad_report"
	ReasonStale       Reason = "stale_report"
	ReasonNotProbed   Reason = "backstore_not_probed"
	ReasonUnreachable Reason = "portal_unreachable"
	ReasonRWOHeld     Reason = "rwo_attached_elsewhere"
)

// Decision is the result of Filter.
type Decision struct {
	// Pass holds the indices (into the nodes argument) of the nodes that pass, in order.
	Pass []int
	// Failed maps each failed node to a message a person can act on. All failures are
	// unresolvable: preempting pods fixes neither reachability nor an attachment held by
	// another live node.
	Failed map[string]string
	// Reasons counts nodes per Reason (ReasonPass included).
	Reasons map[Reason]int
}

// Filter decides, for a pod with the Datera volumes vols, which nodes can host it:
//   - the node must have a report (no report: the agent is not running there, or the
//     extender's cache has not seen it), readable and fresh (a renewal seen within its TTL
//     on the extender's clock; see NodeReport);
//   - for each volume, the report must cover the volume's backstore and the node must reach
//     its portals (per policy);
//   - for each ReadWriteOnce volume, no other node with a fresh report may still hold it.
//     A holder whose report went stale is presumed dead, so its attachment no longer blocks.
//
// Filter is pure: it reads st and now and nothing else.
func Filter(now time.Time, vols []Volume, nodes []string, st State, policy PortalPolicy) Decision {
	d := Decision{Pass: make([]int, 0, len(nodes)), Reasons: map[Reason]int{}}
	if len(vols) == 0 {
		for i := range nodes {
			d.Pass = append(d.Pass, i)
		}
		d.Reasons[ReasonPass] = len(nodes)
		return d
	}
	held := liveHolders(now, vols, st)
	refs := backstoreRefs(vols, st)
	for i, node := range nodes {
		reason, msg := checkNode(now, node, vols, refs, held, st, policy)
		d.Reasons[reason]++
		if reason == ReasonPass {
			d.Pass = append(d.Pass, i)
			continue
		}
		if d.Failed == nil {
			d.Failed = make(map[string]string)
		}
		d.Failed[node] = msg
	}
	return d
}

// holding is the set of live nodes that hold one RWO volume, with a ready-made message part.
type holding struct {
	nodes map[string]struct{}
	desc  string // "node b (report 3s old)"
}

// liveHolders finds, once per request, which live nodes hold each RWO volume.
func liveHolders(now time.Time, vols []Volume, st State) []holding {
	out := make([]holding, len(vols))
	for i, v := range vols {
		if !v.RWO {
			continue
		}
		var parts []string
		for _, h := range st.Holders(v.VolumeID) {
			nr, ok := st.NodeReport(h)
			if !ok || !nr.Fresh(now) {
				continue
			}
			if out[i].nodes == nil {
				out[i].nodes = map[string]struct{}{}
			}
			out[i].nodes[h] = struct{}{}
			parts = append(parts, fmt.Sprintf("%s (report %s old)", h, age(nr.Age(now))))
		}
		sort.Strings(parts)
		out[i].desc = strings.Join(parts, ", ")
	}
	return out
}

// numberer is implemented by States that number backstores (Index).
type numberer interface {
	BackstoreID(name string) (int, bool)
}

// backstoreRefs resolves each volume's backstore once per request.
func backstoreRefs(vols []Volume, st State) []backstoreRef {
	refs := make([]backstoreRef, len(vols))
	num, _ := st.(numberer)
	for i, v := range vols {
		refs[i] = backstoreRef{name: v.Backstore, id: -1}
		if num != nil {
			if id, ok := num.BackstoreID(v.Backstore); ok {
				refs[i].id = id
			}
		}
	}
	return refs
}

func checkNode(now time.Time, node string, vols []Volume, refs []backstoreRef, held []holding, st State, policy PortalPolicy) (Reason, string) {
	nr, ok := st.NodeReport(node)
	if !ok {
		return ReasonNoReport, fmt.Sprintf("node %s: no reachability report from the petfabric node agent (Lease %s not found)", node, LeaseName(node))
	}
	if nr.Err != nil {
		return ReasonBadReport, fmt.Sprintf("node %s: unreadable reachability report: %v", node, nr.Err)
	}
	if !nr.Fresh(now) {
		switch {
		case nr.RenewTime.IsZero():
			return ReasonStale, fmt.Sprintf("node %s: reachability report was never renewed; is the petfabric node agent running?", node)
		case nr.ObservedAt.IsZero():
			return ReasonStale, fmt.Sprintf("node %s: reachability report has not been observed yet", node)
		case nr.TTL <= 0:
			return ReasonStale, fmt.Sprintf("node %s: reachability report has no leaseDurationSeconds, so it is never fresh", node)
		}
		return ReasonStale, fmt.Sprintf("node %s: reachability report is stale (no renewal seen for %s, valid for %s); is the petfabric node agent running?",
			node, age(nr.Age(now)), age(nr.TTL))
	}
	for i, v := range vols {
		sum, ok := nr.backstoreAt(refs[i])
		if !ok || sum.Portals == 0 {
			return ReasonNotProbed, fmt.Sprintf("node %s: backstore %s of volume %s is not probed by the node agent (add it to the agent's backstores; report %s old)",
				node, v.Backstore, v.VolumeID, age(nr.Age(now)))
		}
		if sum.Reachable < sum.Portals && (policy == AllPortals || sum.Reachable == 0) {
			// Only failures pay for building a message.
			return ReasonUnreachable, fmt.Sprintf("node %s: %s (report %s old)", node, portalProblem(nr.Report.Backstores[v.Backstore]), age(nr.Age(now)))
		}
		if h := held[i]; h.nodes != nil {
			if _, self := h.nodes[node]; !self || len(h.nodes) > 1 {
				return ReasonRWOHeld, fmt.Sprintf("node %s: ReadWriteOnce volume %s%s is still attached to node %s",
					node, v.VolumeID, claimSuffix(v), h.desc)
			}
		}
	}
	return ReasonPass, ""
}

// portalProblem describes the unreachable portals of a backstore.
func portalProblem(bs BackstoreReport) string {
	var bad []string
	for portal, p := range bs.Portals {
		if !p.OK {
			bad = append(bad, portal)
		}
	}
	slices.Sort(bad)
	parts := make([]string, len(bad))
	for i, portal := range bad {
		parts[i] = fmt.Sprintf("portal %s unreachable: %s", portal, bs.Portals[portal].Error)
	}
	return strings.Join(parts, "; ")
}

func claimSuffix(v Volume) string {
	if v.Claim == "" {
		return ""
	}
	return " (claim " + v.Claim + ")"
}

// age prints a duration the way people read report ages: whole seconds, or milliseconds
// under a second.
func age(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	if d < time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}
