package placement

import (
	"slices"
	"strings"
	"time"
)

// MaxScore is the extender protocol's MaxExtenderPriority: kube-scheduler multiplies an
// extender's score by weight × (100 / 10) and does not clamp it, so staying in 0..10 is the
// extender's job.
const MaxScore = 10

// Score components (see Prioritize). They add up to MaxScore.
const (
	maxRTTPoints    = 6
	maxAttachPoints = 2
	maxSpreadPoints = 2
)

// rttBase is the RTT that still earns all RTT points; each doubling beyond it costs one.
const rttBase = 250 * time.Microsecond

// Prioritize scores each node 0..10 for a pod with the Datera volumes vols. The score is
//
//	score = rtt (0..6) + attached (0..2) + spread (0..2)
//
// rtt: for each volume, the slowest reachable portal of its backstore on this node gives
// 6 points at ≤ 250 µs and one point less per doubling (≤ 500 µs: 5, ≤ 1 ms: 4, ≤ 2 ms: 3,
// ≤ 4 ms: 2, ≤ 8 ms: 1, slower or unreachable: 0); the node gets the minimum over the
// volumes, because the slowest volume bounds the pod's I/O.
//
// attached: 2 × (volumes of the pod already attached on this node) / (volumes), rounded to
// the nearest integer. Re-using an attachment skips an ACL change and an iSCSI login, and a
// pet that comes back to its node finds its page cache and multipath maps still there.
//
// spread: 2 when no other pet of the pod's StatefulSet has a volume attached on the node,
// 1 when one has, 0 when two or more have. Pets of one StatefulSet are usually replicas of
// each other; putting them on different nodes keeps a node failure from taking out several.
// A pod that is not a labelled pet gets 2 everywhere (a constant does not change ranking).
//
// Nodes without a fresh, readable report score 0 (Filter removes them anyway). Prioritize
// is pure: it reads st and now and nothing else.
func Prioritize(now time.Time, vols []Volume, nodes []string, st State) []int64 {
	scores := make([]int64, len(nodes))
	if len(vols) == 0 {
		return scores
	}
	siblings := siblingNodes(vols, st)
	refs := backstoreRefs(vols, st)
	for i, node := range nodes {
		nr, ok := st.NodeReport(node)
		if !ok || nr.Err != nil || !nr.Fresh(now) {
			continue
		}
		scores[i] = rttPoints(nr, refs) + attachPoints(nr, vols) + spreadPoints(siblings[node])
	}
	return scores
}

// rttPoints is the minimum over volumes of the points for their slowest reachable portal.
func rttPoints(nr *NodeReport, refs []backstoreRef) int64 {
	points := int64(maxRTTPoints)
	for _, ref := range refs {
		sum, ok := nr.backstoreAt(ref)
		if !ok || sum.Reachable == 0 {
			return 0
		}
		points = min(points, RTTPoints(sum.SlowestRTT))
	}
	return points
}

// RTTPoints maps one round-trip time to 0..6 points (exported for documentation and tests).
func RTTPoints(rtt time.Duration) int64 {
	points := int64(maxRTTPoints)
	for limit := rttBase; rtt > limit && points > 0; limit *= 2 {
		points--
	}
	return points
}

func attachPoints(nr *NodeReport, vols []Volume) int64 {
	n := 0
	for _, v := range vols {
		if _, ok := nr.Attached[v.VolumeID]; ok {
			n++
		}
	}
	// Round half up: (2n·2 + len) / (2·len).
	return int64((2*maxAttachPoints*n + len(vols)) / (2 * len(vols)))
}

func spreadPoints(otherPets int) int64 {
	return max(0, int64(maxSpreadPoints-otherPets))
}

// siblingNodes counts, per node, the other pets of the pod's StatefulSet that have a volume
// attached there. It walks the StatefulSet's volumes (a handful) rather than every node's
// attachment list, so it costs the same on 5 or 5,000 nodes.
func siblingNodes(vols []Volume, st State) map[string]int {
	var pet Pet
	for _, v := range vols {
		if v.Pet.Valid() {
			pet = v.Pet
			break
		}
	}
	if !pet.Valid() {
		return nil
	}
	// (node, ordinal) pairs, sorted, then the distinct ordinals counted per node: three
	// allocations however many nodes hold pets.
	type held struct {
		node    string
		ordinal int
	}
	var pairs []held
	for _, pv := range st.PetVolumes(pet.Namespace, pet.StatefulSet) {
		if pv.Ordinal == pet.Ordinal {
			continue
		}
		for _, node := range st.Holders(pv.VolumeID) {
			pairs = append(pairs, held{node, pv.Ordinal})
		}
	}
	slices.SortFunc(pairs, func(a, b held) int {
		if c := strings.Compare(a.node, b.node); c != 0 {
			return c
		}
		return a.ordinal - b.ordinal
	})
	pairs = slices.Compact(pairs)
	out := make(map[string]int, len(pairs))
	for _, p := range pairs {
		out[p.node]++
	}
	return out
}
