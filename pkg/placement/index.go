package placement

import (
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/petfabric/petfabric/pkg/pvoptions"
)

// Index is an in-memory State kept up to date from Lease and PersistentVolume events. It
// precomputes what Filter and Prioritize would otherwise recompute per request: which nodes
// hold each volume, and which volumes belong to each StatefulSet.
//
// Index is not safe for concurrent use; the extender guards it with a sync.RWMutex (many
// concurrent readers, one informer writer).
type Index struct {
	// reports holds each node's report with what Filter checks on every node (freshness,
	// and per backstore whether it is probed and reachable) copied into the map entry:
	// judging a node that passes then reads the entry alone, not the report and its
	// summaries (three cache misses a node on thousands of nodes). An entry keeps its
	// address while the node keeps a report (a NodeRef points at it).
	reports map[string]*indexedReport
	// generation changes whenever a node gains or loses its report (not on renewals).
	generation uint64
	// holders maps volumeID → nodes whose report lists it (sorted, no duplicates).
	holders map[string][]string
	// petVolumes maps StatefulSet → its pets' volumes; pvPets remembers each PV's entry so
	// an update or delete can take it out again.
	petVolumes map[stsKey][]PetVolume
	pvPets     map[string]pvPet
	// backstoreIDs numbers backstore names (never reused) for NodeReport.byID.
	backstoreIDs map[string]int
}

type stsKey struct{ namespace, name string }

// indexedReport is a report with Filter's per-node facts. The masks have bit id set for
// backstore number id (see backstoreIDs): probed when the report covers it with at least
// one portal, allReachable when every portal answered, anyReachable when one did. They
// are complete only when masked (every backstore numbered below 64) and the report is
// readable; otherwise Filter goes by the report itself.
type indexedReport struct {
	nr                                 *NodeReport
	gone                               bool   // the report was deleted (see NodeRef)
	owner                              *Index // the Index the entry is in (see NodeRef)
	observedAt                         time.Time
	ttl                                time.Duration
	probed, allReachable, anyReachable uint64
	masked                             bool
}

type pvPet struct {
	sts stsKey
	vol PetVolume
}

// NewIndex returns an empty Index.
func NewIndex() *Index {
	return &Index{
		reports:    map[string]*indexedReport{},
		holders:    map[string][]string{},
		petVolumes: map[stsKey][]PetVolume{},
		pvPets:     map[string]pvPet{},

		backstoreIDs: map[string]int{},
	}
}

// SetReport adds or replaces a node's report. The Index copies what Filter judges every
// node by (freshness, backstore verdicts) when the report is set: a report must not be
// changed once set, only replaced.
func (x *Index) SetReport(nr *NodeReport) {
	old, had := x.reports[nr.Node]
	if had {
		// Keep the name's string as it was: callers that intern node names (the extender's
		// request reader) hand Filter this very string, and equal pointers compare at once.
		nr.Node = old.nr.Node
		x.deleteReport(nr.Node)
	} else {
		x.generation++
		old = new(indexedReport)
	}
	// The entry is filled in place: a NodeRef taken before a renewal stays valid.
	e := old
	*e = indexedReport{nr: nr, observedAt: nr.ObservedAt, ttl: nr.TTL, owner: x}
	nr.staleMsg, nr.staleTTL, nr.errMsg = staleMessage(nr.TTL), nr.TTL, ""
	if nr.Err != nil {
		nr.errMsg = nr.errMessage()
	}
	if nr.Report == nil {
		x.reports[nr.Node] = e
		return
	}
	byID := make([]BackstoreSummary, len(x.backstoreIDs)+len(nr.Report.Backstores))
	for name, b := range nr.Report.Backstores {
		id, ok := x.backstoreIDs[name]
		if !ok {
			id = len(x.backstoreIDs)
			x.backstoreIDs[name] = id
		}
		if id >= len(byID) {
			byID = append(byID, make([]BackstoreSummary, id+1-len(byID))...)
		}
		if sum, ok := nr.Summary[name]; ok {
			byID[id] = sum
		} else {
			byID[id] = summarize(name, b)
		}
	}
	nr.byID = byID
	e.masked = nr.Err == nil
	for id, sum := range byID {
		if sum.Portals == 0 {
			continue
		}
		if id >= 64 {
			e.masked = false
			break
		}
		e.probed |= 1 << id
		if sum.Reachable == sum.Portals {
			e.allReachable |= 1 << id
		}
		if sum.Reachable > 0 {
			e.anyReachable |= 1 << id
		}
	}
	x.reports[nr.Node] = e
	for _, v := range nr.Report.Attached {
		hs := x.holders[v]
		if i, found := slices.BinarySearch(hs, nr.Node); !found {
			x.holders[v] = slices.Insert(hs, i, nr.Node)
		}
	}
}

// DeleteReport removes a node's report.
func (x *Index) DeleteReport(node string) {
	if _, ok := x.reports[node]; ok {
		x.generation++
		x.deleteReport(node)
	}
}

func (x *Index) deleteReport(node string) {
	e, ok := x.reports[node]
	if !ok {
		return
	}
	old := e.nr
	e.gone = true
	delete(x.reports, node)
	if old.Report == nil {
		return
	}
	for _, v := range old.Report.Attached {
		hs := x.holders[v]
		if i, found := slices.BinarySearch(hs, node); found {
			hs = slices.Delete(hs, i, i+1)
		}
		if len(hs) == 0 {
			delete(x.holders, v)
		} else {
			x.holders[v] = hs
		}
	}
}

// SetPV records the pet a Datera PV belongs to (PVs of other drivers, and unlabelled ones,
// are dropped from the index).
func (x *Index) SetPV(pv *corev1.PersistentVolume) {
	x.DeletePV(pv.Name)
	if pv.Spec.FlexVolume == nil || pv.Spec.FlexVolume.Driver != FlexDriver {
		return
	}
	id := pv.Spec.FlexVolume.Options[pvoptions.OptVolumeID]
	pet := PetOfPV(pv)
	if id == "" || !pet.Valid() {
		return
	}
	e := pvPet{sts: stsKey{pet.Namespace, pet.StatefulSet}, vol: PetVolume{VolumeID: id, Ordinal: pet.Ordinal}}
	x.pvPets[pv.Name] = e
	x.petVolumes[e.sts] = append(x.petVolumes[e.sts], e.vol)
}

// DeletePV forgets a PV.
func (x *Index) DeletePV(name string) {
	e, ok := x.pvPets[name]
	if !ok {
		return
	}
	delete(x.pvPets, name)
	vols := x.petVolumes[e.sts]
	if i := slices.Index(vols, e.vol); i >= 0 {
		vols = slices.Delete(vols, i, i+1)
	}
	if len(vols) == 0 {
		delete(x.petVolumes, e.sts)
	} else {
		x.petVolumes[e.sts] = vols
	}
}

// NodeReport implements State.
func (x *Index) NodeReport(node string) (*NodeReport, bool) {
	if e, ok := x.reports[node]; ok {
		return e.nr, true
	}
	return nil, false
}

// NodeGeneration changes whenever a node gains or loses its report, never on a renewal:
// a reader that keeps the node names (to intern the names of a request) rebuilds them
// when it changed.
func (x *Index) NodeGeneration() uint64 { return x.generation }

// EachNode calls fn with the name of every node that has a report, as the Index holds
// it (the same string on every call until the node loses its report), and a NodeRef to
// its entry.
func (x *Index) EachNode(fn func(node string, ref NodeRef)) {
	for node, e := range x.reports {
		fn(node, NodeRef{e})
	}
}

// NodeRef is a handle on a node's entry in an Index (from EachNode). A caller that keeps
// the node names of the Index to intern request names keeps their NodeRefs beside them,
// and FilterRefs then judges those nodes without looking their names up again. A NodeRef
// stays valid across renewals; once the node's report is deleted it is ignored (the node
// is looked up by name), as is a NodeRef of another Index. Like the Index, it may only be
// used by a reader holding the lock the Index's owner guards it with.
type NodeRef struct{ e *indexedReport }

// entry is the indexed report of x ref stands for, or nil when there is none any more.
func (r NodeRef) entry(x *Index) *indexedReport {
	if r.e == nil || r.e.gone || r.e.owner != x {
		return nil
	}
	return r.e
}

// Holders implements State.
func (x *Index) Holders(volumeID string) []string { return x.holders[volumeID] }

// PetVolumes implements State.
func (x *Index) PetVolumes(namespace, statefulSet string) []PetVolume {
	return x.petVolumes[stsKey{namespace, statefulSet}]
}

// BackstoreID returns the number of a backstore name, if any report named it.
func (x *Index) BackstoreID(name string) (int, bool) {
	id, ok := x.backstoreIDs[name]
	return id, ok
}

// Nodes returns the number of reports held (for metrics).
func (x *Index) Nodes() int { return len(x.reports) }
