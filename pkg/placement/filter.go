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

// reasonOrder numbers the Reasons, so Filter counts into an array instead of a map.
var reasonOrder = [...]Reason{ReasonPass, ReasonNoReport, ReasonBadReport, ReasonStale, ReasonNotProbed, ReasonUnreachable, ReasonRWOHeld}

const (
	rPass = iota
	rNoReport
	rBadReport
	rStale
	rNotProbed
	rUnreachable
	rRWOHeld
)

// Decision is the result of Filter.
type Decision struct {
	// Pass holds the indices (into the nodes argument) of the nodes that pass, in order.
	Pass []int
	// Failed maps each failed node to why it failed. All failures are unresolvable:
	// preempting pods fixes neither reachability nor an attachment held by another live node.
	//
	// The message never names the failed node nor carries a report's age: nodes that fail
	// for the same cause get the identical string, and a retry a minute later gets it again.
	// kube-scheduler builds its FailedScheduling event from these values by counting
	// identical strings ("0/200 nodes are available: 180 cannot reach portal …, 20 …"),
	// and the event recorder only folds repeated events into one (a growing count) when
	// their messages are equal. Which nodes failed, and how old their reports were, goes
	// to the extender's log (Explain).
	Failed map[string]string
	// Reasons counts nodes per Reason (ReasonPass included).
	Reasons map[Reason]int
}

// Messages of the failures that do not depend on the node.
const (
	msgNoReport   = "no reachability report from the petfabric node agent (no petfabric-node-<node> Lease)"
	msgNeverRenew = "reachability report was never renewed; is the petfabric node agent running?"
	msgUnobserved = "reachability report has not been observed yet"
	msgNoTTL      = "reachability report has no leaseDurationSeconds, so it is never fresh"
)

// Filter decides, for a pod with the Datera volumes vols, which nodes can host it:
//   - the node must have a report (no report: the agent is not running there, or the
//     extender's cache has not seen it), readable and fresh (a renewal seen within its TTL
//     on the extender's clock; see NodeReport);
//   - for each volume, the report must cover the volume's backstore and the node must reach
//     its portals (per policy);
//   - for each ReadWriteOnce volume, no other node with a fresh report may still hold it.
//     A holder whose report went stale is presumed dead, so its attachment no longer blocks.
//
// Filter is pure: it reads st and now and nothing else. Over an Index, a node that passes
// costs one map lookup: its entry holds the report's freshness and, per backstore, whether
// it is probed and reachable, which Filter compares with the volumes' backstores as one
// mask (and then the RWO holders, when a volume has live ones). A node that fails, or any
// node of another State, is judged from its report: per volume a slice index into the
// backstore summaries the Index computed when the report arrived. The failure messages
// are built when reports change (Index) or once per request and volume, never per node.
func Filter(now time.Time, vols []Volume, nodes []string, st State, policy PortalPolicy) Decision {
	return FilterRefs(nil, now, vols, nodes, nil, st, policy)
}

// FilterRefs is Filter for a caller that serves many requests: Decision.Pass is built in
// pass when it has room for every node (one slice reused instead of one allocated per
// request), and when st is an *Index, refs[i] is the NodeRef of nodes[i] (from
// Index.EachNode; a zero NodeRef for a name the caller has none for), so such a node is
// judged from its entry without a lookup by name. refs is nil or as long as nodes.
func FilterRefs(pass []int, now time.Time, vols []Volume, nodes []string, refs []NodeRef, st State, policy PortalPolicy) Decision {
	if cap(pass) < len(nodes) {
		pass = make([]int, 0, len(nodes))
	}
	d := Decision{Pass: pass[:0]}
	if len(vols) == 0 {
		for i := range nodes {
			d.Pass = append(d.Pass, i)
		}
		d.Reasons = map[Reason]int{ReasonPass: len(nodes)}
		return d
	}
	c := checker{now: now, vols: vols, refs: backstoreRefs(vols, st), held: liveHolders(now, vols, st),
		notProbed: make([]string, len(vols)), st: st, policy: policy}
	c.index, _ = st.(*Index)
	if c.index != nil {
		// The backstores of all volumes as one mask; a node whose entry covers it (probed,
		// and reachable per policy) needs nothing else from its report unless a volume
		// is held elsewhere. A backstore no report names, or one numbered past the mask,
		// leaves every node to the full check.
		c.masked = true
		for _, r := range c.refs {
			if r.id < 0 || r.id >= 64 {
				c.masked = false
				break
			}
			c.need |= 1 << r.id
		}
		for _, h := range c.held {
			c.anyHeld = c.anyHeld || h.nodes != nil
		}
	}
	var counts [len(reasonOrder)]int
	type failure struct {
		node int
		msg  string
	}
	var failures []failure // collected first, so that the map is made once at its size
	if c.index == nil || len(refs) != len(nodes) {
		refs = nil
	}
	for i, node := range nodes {
		var ref NodeRef
		if refs != nil {
			ref = refs[i]
		}
		reason, msg := c.node(node, ref)
		counts[reason]++
		if reason == rPass {
			d.Pass = append(d.Pass, i)
			continue
		}
		failures = append(failures, failure{i, msg})
	}
	if len(failures) > 0 {
		d.Failed = make(map[string]string, len(failures))
		for _, f := range failures {
			d.Failed[nodes[f.node]] = f.msg
		}
	}
	d.Reasons = make(map[Reason]int, len(reasonOrder))
	for r, n := range counts {
		if n > 0 {
			d.Reasons[reasonOrder[r]] = n
		}
	}
	return d
}

// holding is the set of live nodes that hold one RWO volume, with the message for the
// nodes it keeps out.
type holding struct {
	nodes map[string]struct{}
	msg   string // "ReadWriteOnce volume v (claim ns/c) is still attached to node b"
}

// liveHolders finds, once per request, which live nodes hold each RWO volume.
func liveHolders(now time.Time, vols []Volume, st State) []holding {
	out := make([]holding, len(vols))
	for i, v := range vols {
		if !v.RWO {
			continue
		}
		var live []string
		for _, h := range st.Holders(v.VolumeID) {
			nr, ok := st.NodeReport(h)
			if !ok || !nr.Fresh(now) {
				continue
			}
			if out[i].nodes == nil {
				out[i].nodes = map[string]struct{}{}
			}
			out[i].nodes[h] = struct{}{}
			live = append(live, h)
		}
		if live == nil {
			continue
		}
		sort.Strings(live)
		what := "node " + live[0]
		if len(live) > 1 {
			what = "nodes " + strings.Join(live, ", ")
		}
		out[i].msg = fmt.Sprintf("ReadWriteOnce volume %s%s is still attached to %s", v.VolumeID, claimSuffix(v), what)
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

// checker judges the nodes of one request.
type checker struct {
	now       time.Time
	vols      []Volume
	refs      []backstoreRef
	held      []holding
	notProbed []string // per volume, built the first time a node lacks its backstore
	st        State
	policy    PortalPolicy
	// index is st when it is an *Index; need is the mask of the volumes' backstores, valid
	// when masked; anyHeld says whether a volume is held by a live node.
	index   *Index
	need    uint64
	masked  bool
	anyHeld bool
}

// node judges one node; ref, when it has an entry, is node's (see FilterRefs).
func (c *checker) node(node string, ref NodeRef) (int, string) {
	var nr *NodeReport
	if c.index != nil {
		e := ref.entry(c.index)
		if e == nil {
			var ok bool
			if e, ok = c.index.reports[node]; !ok {
				return rNoReport, msgNoReport
			}
		}
		if c.masked && e.masked && freshAt(c.now, e.observedAt, e.ttl) && e.probed&c.need == c.need {
			reachable := e.allReachable
			if c.policy == AnyPortal {
				reachable = e.anyReachable
			}
			if reachable&c.need == c.need {
				if !c.anyHeld {
					return rPass, ""
				}
				return c.holds(node)
			}
		}
		nr = e.nr
	} else {
		var ok bool
		if nr, ok = c.st.NodeReport(node); !ok {
			return rNoReport, msgNoReport
		}
	}
	if nr.Err != nil {
		return rBadReport, nr.errMessage()
	}
	if !nr.Fresh(c.now) {
		return rStale, nr.staleMessage()
	}
	for i, v := range c.vols {
		sum, ok := nr.backstoreAt(c.refs[i])
		if !ok || sum.Portals == 0 {
			if c.notProbed[i] == "" {
				c.notProbed[i] = fmt.Sprintf("backstore %s of volume %s is not probed by the node agent (add it to the agent's backstores)", v.Backstore, v.VolumeID)
			}
			return rNotProbed, c.notProbed[i]
		}
		if sum.Reachable < sum.Portals && (c.policy == AllPortals || sum.Reachable == 0) {
			if sum.unreachable != "" {
				return rUnreachable, sum.unreachable
			}
			return rUnreachable, portalProblem(v.Backstore, nr.Report.Backstores[v.Backstore])
		}
		if h := c.held[i]; h.nodes != nil {
			if _, self := h.nodes[node]; !self || len(h.nodes) > 1 {
				return rRWOHeld, h.msg
			}
		}
	}
	return rPass, ""
}

// holds is the last check of node once every volume's backstore is fine there: the first
// volume (in order) held by another live node fails it.
func (c *checker) holds(node string) (int, string) {
	for _, h := range c.held {
		if h.nodes != nil {
			if _, self := h.nodes[node]; !self || len(h.nodes) > 1 {
				return rRWOHeld, h.msg
			}
		}
	}
	return rPass, ""
}

// staleMessage says why a report that is not fresh does not count (see NodeReport). The
// Index builds it when the report arrives; a report never indexed builds it here.
func (n *NodeReport) staleMessage() string {
	switch {
	case n.RenewTime.IsZero():
		return msgNeverRenew
	case n.ObservedAt.IsZero():
		return msgUnobserved
	case n.TTL <= 0:
		return msgNoTTL
	case n.staleMsg != "" && n.staleTTL == n.TTL:
		return n.staleMsg
	}
	return staleMessage(n.TTL)
}

func staleMessage(ttl time.Duration) string {
	return fmt.Sprintf("reachability report is stale (no renewal seen within its %s validity); is the petfabric node agent running?", age(ttl))
}

// errMessage says why a report is unusable.
func (n *NodeReport) errMessage() string {
	if n.errMsg != "" {
		return n.errMsg
	}
	return "unreadable reachability report: " + n.Err.Error()
}

// portalProblem describes the unreachable portals of a backstore, in portal order:
// "cannot reach portal 10.1.1.5:3260 of backstore bs (connection refused)", or for several
// "cannot reach portals 10.1.1.5:3260 (connection refused) and 10.1.1.6:3260 (i/o timeout)
// of backstore bs". Empty when every portal is reachable.
func portalProblem(backstore string, bs BackstoreReport) string {
	var bad []string
	for portal, p := range bs.Portals {
		if !p.OK {
			bad = append(bad, portal)
		}
	}
	switch len(bad) {
	case 0:
		return ""
	case 1:
		return fmt.Sprintf("cannot reach portal %s of backstore %s (%s)", bad[0], backstore, bs.Portals[bad[0]].Error)
	}
	slices.Sort(bad)
	parts := make([]string, len(bad))
	for i, portal := range bad {
		parts[i] = fmt.Sprintf("%s (%s)", portal, bs.Portals[portal].Error)
	}
	return fmt.Sprintf("cannot reach portals %s and %s of backstore %s", strings.Join(parts[:len(parts)-1], ", "), parts[len(parts)-1], backstore)
}

func claimSuffix(v Volume) string {
	if v.Claim == "" {
		return ""
	}
	return " (claim " + v.Claim + ")"
}

// Explain summarises a Decision for a log line, in the scheduler's manner but with the
// detail the event leaves out: how many of the nodes passed, then per distinct message
// (most nodes first) the count and the first few nodes, in request order, with their
// report ages. It costs a map lookup per node; call it only when the line is logged.
//
//	1/5 nodes pass; 3 × cannot reach portal 10.1.1.5:3260 of backstore bs (connection refused): c (report 12s old), e (report 1s old), f (report 3s old); 1 × no reachability report …: b
func Explain(now time.Time, d Decision, nodes []string, st State, examples int) string {
	type group struct {
		msg   string
		count int
		nodes []string
	}
	var groups []*group
	byMsg := map[string]*group{}
	for _, node := range nodes {
		msg, failed := d.Failed[node]
		if !failed {
			continue
		}
		g := byMsg[msg]
		if g == nil {
			g = &group{msg: msg}
			byMsg[msg] = g
			groups = append(groups, g)
		}
		g.count++
		if len(g.nodes) < examples {
			desc := node
			if nr, ok := st.NodeReport(node); ok && !nr.ObservedAt.IsZero() {
				desc += " (report " + age(nr.Age(now)) + " old)"
			}
			g.nodes = append(g.nodes, desc)
		}
	}
	slices.SortStableFunc(groups, func(a, b *group) int { return b.count - a.count })
	var sb strings.Builder
	fmt.Fprintf(&sb, "%d/%d nodes pass", len(d.Pass), len(nodes))
	for _, g := range groups {
		fmt.Fprintf(&sb, "; %d × %s: %s", g.count, g.msg, strings.Join(g.nodes, ", "))
		if g.count > len(g.nodes) {
			sb.WriteString(", …")
		}
	}
	return sb.String()
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
