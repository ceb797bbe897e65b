package placement

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/pkg/pvoptions"
)

const (
	bsA = "172.16.0.10:7717"
	bsB = "172.16.0.20:7717"
	p1  = "10.1.1.5:3260"
	p2  = "10.1.1.6:3260"
	p3  = "10.2.1.5:3260"
)

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func ok(rtt time.Duration) PortalReport { return PortalReport{OK: true, RTTMicros: rtt.Microseconds()} }
func down(err string) PortalReport      { return PortalReport{Error: err} }

// reportOf builds a valid Report; portals maps backstore → portal → result.
func reportOf(portals map[string]map[string]PortalReport, attached ...string) *Report {
	r := &Report{Version: ReportVersion, Initiator: "iqn.2024-01.test:node", ProbedAt: now.Add(-time.Second),
		Backstores: map[string]BackstoreReport{}, Attached: attached}
	for bs, ps := range portals {
		r.Backstores[bs] = BackstoreReport{Portals: ps}
	}
	return r
}

// leaseFor builds the Lease an agent would write, renewed `ago` before now.
func leaseFor(t testing.TB, node string, r *Report, ago, ttl time.Duration) *coordinationv1.Lease {
	t.Helper()
	l := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: LeaseName(node), Namespace: "petfabric"},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity:       ptr.To(node),
			LeaseDurationSeconds: ptr.To(int32(ttl / time.Second)),
			RenewTime:            &metav1.MicroTime{Time: now.Add(-ago)},
		},
	}
	if r != nil {
		enc, err := r.Encode()
		require.NoError(t, err)
		l.Annotations = map[string]string{ReportAnnotation: enc}
	}
	return l
}

// indexOf indexes the Leases as a reader whose clock agrees with the nodes' would: each
// renewal is observed at its renewTime (freshness_test.go covers clocks that disagree).
func indexOf(t testing.TB, leases ...*coordinationv1.Lease) *Index {
	t.Helper()
	x := NewIndex()
	for _, l := range leases {
		nr, ok := NodeReportFromLease(l)
		require.True(t, ok, l.Name)
		nr.Observe(nil, nr.RenewTime, 0)
		x.SetReport(nr)
	}
	return x
}

const ttl = 40 * time.Second

func TestFilter(t *testing.T) {
	good := map[string]map[string]PortalReport{bsA: {p1: ok(200 * time.Microsecond), p2: ok(300 * time.Microsecond)}, bsB: {p3: ok(time.Millisecond)}}
	volA := Volume{Claim: "shop/data-db-0", PV: "pv-a", VolumeID: "pf-vol-a", Backstore: bsA, RWO: true}
	volB := Volume{Claim: "shop/logs-db-0", PV: "pv-b", VolumeID: "pf-vol-b", Backstore: bsB, RWO: true}
	volShared := Volume{Claim: "shop/shared", PV: "pv-s", VolumeID: "pf-vol-s", Backstore: bsA, RWO: false}

	tests := []struct {
		name   string
		vols   []Volume
		leases func(t testing.TB) []*coordinationv1.Lease
		nodes  []string
		policy PortalPolicy
		pass   []string
		failed map[string]string // node → exact message, or substring when prefixed by "~"
	}{
		{
			name:  "pod without Datera volumes passes everywhere, even without reports",
			nodes: []string{"a", "b"},
			leases: func(testing.TB) []*coordinationv1.Lease {
				return nil
			},
			pass: []string{"a", "b"},
		},
		{
			name: "four nodes: good, no report, unreachable portal, stale report",
			vols: []Volume{volA},
			leases: func(t testing.TB) []*coordinationv1.Lease {
				return []*coordinationv1.Lease{
					leaseFor(t, "a", reportOf(good), 5*time.Second, ttl),
					leaseFor(t, "c", reportOf(map[string]map[string]PortalReport{bsA: {p1: down("connection refused"), p2: ok(time.Millisecond)}}), 12*time.Second, ttl),
					leaseFor(t, "d", reportOf(good), 95*time.Second, ttl),
				}
			},
			nodes: []string{"a", "b", "c", "d"},
			pass:  []string{"a"},
			failed: map[string]string{
				"b": "no reachability report from the petfabric node agent (no petfabric-node-<node> Lease)",
				"c": "cannot reach portal 10.1.1.5:3260 of backstore 172.16.0.10:7717 (connection refused)",
				"d": "reachability report is stale (no renewal seen within its 40s validity); is the petfabric node agent running?",
			},
		},
		{
			name: "any-portal policy accepts a node that reaches one of two portals",
			vols: []Volume{volA},
			leases: func(t testing.TB) []*coordinationv1.Lease {
				return []*coordinationv1.Lease{
					leaseFor(t, "c", reportOf(map[string]map[string]PortalReport{bsA: {p1: down("connection refused"), p2: ok(time.Millisecond)}}), time.Second, ttl),
					leaseFor(t, "e", reportOf(map[string]map[string]PortalReport{bsA: {p1: down("timeout during login: i/o timeout"), p2: down("connection refused")}}), time.Second, ttl),
				}
			},
			nodes:  []string{"c", "e"},
			policy: AnyPortal,
			pass:   []string{"c"},
			failed: map[string]string{
				"e": "cannot reach portals 10.1.1.5:3260 (timeout during login: i/o timeout) and 10.1.1.6:3260 (connection refused) of backstore 172.16.0.10:7717",
			},
		},
		{
			name: "backstore not probed by the agent",
			vols: []Volume{volA, volB},
			leases: func(t testing.TB) []*coordinationv1.Lease {
				return []*coordinationv1.Lease{leaseFor(t, "a", reportOf(map[string]map[string]PortalReport{bsA: good[bsA]}), 2*time.Second, ttl)}
			},
			nodes: []string{"a"},
			failed: map[string]string{
				"a": "backstore 172.16.0.20:7717 of volume pf-vol-b is not probed by the node agent (add it to the agent's backstores)",
			},
		},
		{
			name: "unreadable report",
			vols: []Volume{volA},
			leases: func(t testing.TB) []*coordinationv1.Lease {
				l := leaseFor(t, "a", reportOf(good), time.Second, ttl)
				l.Annotations[ReportAnnotation] = `{"version":2}`
				return []*coordinationv1.Lease{l, leaseFor(t, "b", nil, time.Second, ttl)}
			},
			nodes: []string{"a", "b"},
			failed: map[string]string{
				"a": "unreadable reachability report: unsupported report version 2 (this build reads versions 1 to 1; a newer agent needs a newer reader)",
				"b": "unreadable reachability report: no petfabric.io/report annotation on the Lease",
			},
		},
		{
			name: "lease never renewed",
			vols: []Volume{volA},
			leases: func(t testing.TB) []*coordinationv1.Lease {
				l := leaseFor(t, "a", reportOf(good), time.Second, ttl)
				l.Spec.RenewTime = nil
				return []*coordinationv1.Lease{l}
			},
			nodes:  []string{"a"},
			failed: map[string]string{"a": "~was never renewed"},
		},
		{
			name: "RWO volume held by a live node keeps the pod there",
			vols: []Volume{volA},
			leases: func(t testing.TB) []*coordinationv1.Lease {
				return []*coordinationv1.Lease{
					leaseFor(t, "a", reportOf(good), 3*time.Second, ttl),
					leaseFor(t, "b", reportOf(good, "pf-vol-a"), 3*time.Second, ttl),
				}
			},
			nodes: []string{"a", "b"},
			pass:  []string{"b"},
			failed: map[string]string{
				"a": "ReadWriteOnce volume pf-vol-a (claim shop/data-db-0) is still attached to node b",
			},
		},
		{
			name: "RWO volume held by a node whose report went stale is released",
			vols: []Volume{volA},
			leases: func(t testing.TB) []*coordinationv1.Lease {
				return []*coordinationv1.Lease{
					leaseFor(t, "a", reportOf(good), 3*time.Second, ttl),
					leaseFor(t, "b", reportOf(good, "pf-vol-a"), 2*time.Minute, ttl),
				}
			},
			nodes:  []string{"a", "b"},
			pass:   []string{"a"},
			failed: map[string]string{"b": "~is stale"},
		},
		{
			name: "RWO volume held by two live nodes blocks both",
			vols: []Volume{volA},
			leases: func(t testing.TB) []*coordinationv1.Lease {
				return []*coordinationv1.Lease{
					leaseFor(t, "a", reportOf(good, "pf-vol-a"), 3*time.Second, ttl),
					leaseFor(t, "b", reportOf(good, "pf-vol-a"), 4*time.Second, ttl),
				}
			},
			nodes: []string{"a", "b"},
			failed: map[string]string{
				"a": "ReadWriteOnce volume pf-vol-a (claim shop/data-db-0) is still attached to nodes a, b",
				"b": "ReadWriteOnce volume pf-vol-a (claim shop/data-db-0) is still attached to nodes a, b",
			},
		},
		{
			name: "a shared (ReadWriteMany) volume may be attached elsewhere",
			vols: []Volume{volShared},
			leases: func(t testing.TB) []*coordinationv1.Lease {
				return []*coordinationv1.Lease{
					leaseFor(t, "a", reportOf(good), time.Second, ttl),
					leaseFor(t, "b", reportOf(good, "pf-vol-s"), time.Second, ttl),
				}
			},
			nodes: []string{"a", "b"},
			pass:  []string{"a", "b"},
		},
		{
			name: "report exactly at its TTL is still fresh",
			vols: []Volume{volA},
			leases: func(t testing.TB) []*coordinationv1.Lease {
				return []*coordinationv1.Lease{leaseFor(t, "a", reportOf(good), ttl, ttl)}
			},
			nodes: []string{"a"},
			pass:  []string{"a"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := indexOf(t, tc.leases(t)...)
			d := Filter(now, tc.vols, tc.nodes, st, tc.policy)
			var pass []string
			for _, i := range d.Pass {
				pass = append(pass, tc.nodes[i])
			}
			assert.Equal(t, tc.pass, pass)
			require.Len(t, d.Failed, len(tc.failed), "failed: %v", d.Failed)
			for node, want := range tc.failed {
				if sub, ok := strings.CutPrefix(want, "~"); ok {
					assert.Contains(t, d.Failed[node], sub, node)
				} else {
					assert.Equal(t, want, d.Failed[node], node)
				}
			}
			total := 0
			for _, n := range d.Reasons {
				total += n
			}
			assert.Equal(t, len(tc.nodes), total, "every node counted once in Reasons")
			assert.Equal(t, len(tc.pass), d.Reasons[ReasonPass])
		})
	}
}

func TestFilterReasons(t *testing.T) {
	good := map[string]map[string]PortalReport{bsA: {p1: ok(time.Millisecond)}}
	st := indexOf(t,
		leaseFor(t, "a", reportOf(good), time.Second, ttl),
		leaseFor(t, "c", reportOf(map[string]map[string]PortalReport{bsA: {p1: down("connection refused")}}), time.Second, ttl),
		leaseFor(t, "d", reportOf(good), time.Hour, ttl),
		leaseFor(t, "e", reportOf(good, "v"), time.Second, ttl),
	)
	d := Filter(now, []Volume{{VolumeID: "v", Backstore: bsA, RWO: true}}, []string{"a", "b", "c", "d", "e"}, st, AllPortals)
	assert.Equal(t, map[Reason]int{ReasonNoReport: 1, ReasonUnreachable: 1, ReasonStale: 1, ReasonPass: 1, ReasonRWOHeld: 1}, d.Reasons)
	assert.Equal(t, []int{4}, d.Pass, "only the holder of the RWO volume passes")
}

func TestRTTPoints(t *testing.T) {
	for _, tc := range []struct {
		rtt  time.Duration
		want int64
	}{
		{0, 6}, {250 * time.Microsecond, 6}, {251 * time.Microsecond, 5}, {500 * time.Microsecond, 5},
		{time.Millisecond, 4}, {2 * time.Millisecond, 3}, {4 * time.Millisecond, 2},
		{8 * time.Millisecond, 1}, {8*time.Millisecond + 1, 0}, {time.Second, 0},
	} {
		assert.Equal(t, tc.want, RTTPoints(tc.rtt), tc.rtt.String())
	}
}

func TestPrioritize(t *testing.T) {
	fast := map[string]map[string]PortalReport{bsA: {p1: ok(100 * time.Microsecond), p2: ok(200 * time.Microsecond)}, bsB: {p3: ok(150 * time.Microsecond)}}
	slow := map[string]map[string]PortalReport{bsA: {p1: ok(100 * time.Microsecond), p2: ok(3 * time.Millisecond)}, bsB: {p3: ok(150 * time.Microsecond)}}
	halfDown := map[string]map[string]PortalReport{bsA: {p1: ok(100 * time.Microsecond), p2: down("refused")}, bsB: {p3: ok(150 * time.Microsecond)}}
	pet := func(ord int) Pet { return Pet{Namespace: "shop", StatefulSet: "db", Ordinal: ord} }
	vol0 := Volume{VolumeID: "db-0-data", Backstore: bsA, RWO: true, Pet: pet(0)}
	vol0b := Volume{VolumeID: "db-0-logs", Backstore: bsB, RWO: true, Pet: pet(0)}

	tests := []struct {
		name   string
		vols   []Volume
		leases func(t testing.TB) []*coordinationv1.Lease
		pvs    []PetVolume
		nodes  []string
		want   []int64
	}{
		{
			name:  "no Datera volumes: zero everywhere",
			nodes: []string{"a", "b"},
			want:  []int64{0, 0},
			leases: func(testing.TB) []*coordinationv1.Lease {
				return nil
			},
		},
		{
			name: "slowest portal governs the RTT points",
			vols: []Volume{vol0, vol0b},
			leases: func(t testing.TB) []*coordinationv1.Lease {
				return []*coordinationv1.Lease{
					leaseFor(t, "fast", reportOf(fast), time.Second, ttl),
					leaseFor(t, "slow", reportOf(slow), time.Second, ttl),
					// An unreachable portal is skipped: the others still count.
					leaseFor(t, "half", reportOf(halfDown), time.Second, ttl),
				}
			},
			nodes: []string{"fast", "slow", "half", "none"},
			// fast: 6 rtt + 0 attached + 2 spread; slow: 3ms → 2; none: no report → 0.
			want: []int64{8, 4, 8, 0},
		},
		{
			name: "attached volumes earn up to 2 points",
			vols: []Volume{vol0, vol0b},
			leases: func(t testing.TB) []*coordinationv1.Lease {
				return []*coordinationv1.Lease{
					leaseFor(t, "both", reportOf(fast, "db-0-data", "db-0-logs"), time.Second, ttl),
					leaseFor(t, "one", reportOf(fast, "db-0-data"), time.Second, ttl),
					leaseFor(t, "zero", reportOf(fast), time.Second, ttl),
				}
			},
			nodes: []string{"both", "one", "zero"},
			want:  []int64{10, 9, 8},
		},
		{
			name: "pets of one StatefulSet spread out",
			vols: []Volume{vol0},
			leases: func(t testing.TB) []*coordinationv1.Lease {
				return []*coordinationv1.Lease{
					leaseFor(t, "empty", reportOf(fast), time.Second, ttl),
					leaseFor(t, "has-1", reportOf(fast, "db-1-data", "db-1-logs"), time.Second, ttl),
					leaseFor(t, "has-1-2", reportOf(fast, "db-1-data", "db-2-data", "other-0"), time.Second, ttl),
					leaseFor(t, "own", reportOf(fast, "db-0-logs"), time.Second, ttl),
				}
			},
			pvs: []PetVolume{
				{VolumeID: "db-0-data", Ordinal: 0}, {VolumeID: "db-0-logs", Ordinal: 0},
				{VolumeID: "db-1-data", Ordinal: 1}, {VolumeID: "db-1-logs", Ordinal: 1}, {VolumeID: "db-2-data", Ordinal: 2},
			},
			nodes: []string{"empty", "has-1", "has-1-2", "own"},
			// own: the pod's own other volume is not a sibling → 2 spread points.
			want: []int64{8, 7, 6, 8},
		},
		{
			name: "stale node scores zero",
			vols: []Volume{vol0},
			leases: func(t testing.TB) []*coordinationv1.Lease {
				return []*coordinationv1.Lease{leaseFor(t, "old", reportOf(fast), time.Hour, ttl)}
			},
			nodes: []string{"old"},
			want:  []int64{0},
		},
		{
			name: "backstore unreachable scores no RTT points",
			vols: []Volume{{VolumeID: "x", Backstore: bsA, RWO: true}},
			leases: func(t testing.TB) []*coordinationv1.Lease {
				return []*coordinationv1.Lease{leaseFor(t, "n", reportOf(map[string]map[string]PortalReport{bsA: {p1: down("refused")}}), time.Second, ttl)}
			},
			nodes: []string{"n"},
			want:  []int64{2},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := indexOf(t, tc.leases(t)...)
			for i, pv := range tc.pvs {
				st.SetPV(datersPV("pv-"+pv.VolumeID, pv.VolumeID, "db", pv.Ordinal, i))
			}
			got := Prioritize(now, tc.vols, tc.nodes, st)
			assert.Equal(t, tc.want, got)
			for _, s := range got {
				assert.GreaterOrEqual(t, s, int64(0))
				assert.LessOrEqual(t, s, int64(MaxScore))
			}
		})
	}
}

// datersPV builds a PV as the webhook writes it (i only varies the claim name).
func datersPV(name, volumeID, sts string, ordinal, i int) *corev1.PersistentVolume {
	return &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
			LabelStatefulSet: sts, LabelOrdinal: strconv.Itoa(ordinal), "app.kubernetes.io/managed-by": "petfabric",
		}},
		Spec: corev1.PersistentVolumeSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			ClaimRef:    &corev1.ObjectReference{Namespace: "shop", Name: "c-" + strconv.Itoa(i)},
			PersistentVolumeSource: corev1.PersistentVolumeSource{FlexVolume: &corev1.FlexPersistentVolumeSource{
				Driver: FlexDriver, Options: map[string]string{pvoptions.OptVolumeID: volumeID, pvoptions.OptBackstoreServer: bsA},
			}},
		},
	}
}

type mapLookup struct {
	claims map[string]*corev1.PersistentVolumeClaim
	pvs    map[string]*corev1.PersistentVolume
}

func (m mapLookup) Claim(ns, name string) (*corev1.PersistentVolumeClaim, bool) {
	c, ok := m.claims[ns+"/"+name]
	return c, ok
}

func (m mapLookup) PV(name string) (*corev1.PersistentVolume, bool) {
	p, ok := m.pvs[name]
	return p, ok
}

func (m mapLookup) PVForClaim(ns, name string) (*corev1.PersistentVolume, bool) {
	for _, p := range m.pvs {
		if p.Spec.ClaimRef != nil && p.Spec.ClaimRef.Namespace == ns && p.Spec.ClaimRef.Name == name {
			return p, true
		}
	}
	return nil, false
}

func TestPodVolumes(t *testing.T) {
	pv := func(name, claim string, mut func(*corev1.PersistentVolume)) *corev1.PersistentVolume {
		p := datersPV(name, "vol-"+name, "db", 0, 0)
		p.Spec.ClaimRef = &corev1.ObjectReference{Namespace: "shop", Name: claim}
		if mut != nil {
			mut(p)
		}
		return p
	}
	claim := func(name, volumeName string) *corev1.PersistentVolumeClaim {
		return &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name, UID: types.UID("uid-" + name)},
			Spec: corev1.PersistentVolumeClaimSpec{VolumeName: volumeName}}
	}
	pvcVol := func(name, claim string) corev1.Volume {
		return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}}
	}
	tests := []struct {
		name    string
		volumes []corev1.Volume
		lookup  mapLookup
		want    []Volume
		wantErr string
	}{
		{
			name:    "no volumes",
			volumes: []corev1.Volume{{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
		},
		{
			name:    "bound claim",
			volumes: []corev1.Volume{pvcVol("data", "data-db-0")},
			lookup: mapLookup{
				claims: map[string]*corev1.PersistentVolumeClaim{"shop/data-db-0": claim("data-db-0", "pv1")},
				pvs:    map[string]*corev1.PersistentVolume{"pv1": pv("pv1", "data-db-0", nil)},
			},
			want: []Volume{{Claim: "shop/data-db-0", PV: "pv1", VolumeID: "vol-pv1", Backstore: bsA, RWO: true, Pet: Pet{"shop", "db", 0}}},
		},
		{
			name:    "claim not created yet: PV pre-bound by claimRef",
			volumes: []corev1.Volume{pvcVol("data", "data-db-0")},
			lookup:  mapLookup{pvs: map[string]*corev1.PersistentVolume{"pv1": pv("pv1", "data-db-0", nil)}},
			want:    []Volume{{Claim: "shop/data-db-0", PV: "pv1", VolumeID: "vol-pv1", Backstore: bsA, RWO: true, Pet: Pet{"shop", "db", 0}}},
		},
		{
			name:    "pending claim: PV pre-bound by claimRef",
			volumes: []corev1.Volume{pvcVol("data", "data-db-0")},
			lookup: mapLookup{
				claims: map[string]*corev1.PersistentVolumeClaim{"shop/data-db-0": claim("data-db-0", "")},
				pvs:    map[string]*corev1.PersistentVolume{"pv1": pv("pv1", "data-db-0", nil)},
			},
			want: []Volume{{Claim: "shop/data-db-0", PV: "pv1", VolumeID: "vol-pv1", Backstore: bsA, RWO: true, Pet: Pet{"shop", "db", 0}}},
		},
		{
			name:    "claimRef UID of an older claim does not count",
			volumes: []corev1.Volume{pvcVol("data", "data-db-0")},
			lookup: mapLookup{
				claims: map[string]*corev1.PersistentVolumeClaim{"shop/data-db-0": claim("data-db-0", "")},
				pvs: map[string]*corev1.PersistentVolume{"pv1": pv("pv1", "data-db-0", func(p *corev1.PersistentVolume) {
					p.Spec.ClaimRef.UID = "uid-of-a-deleted-claim"
				})},
			},
		},
		{
			name:    "claim bound to a PV of another driver",
			volumes: []corev1.Volume{pvcVol("data", "data-db-0")},
			lookup: mapLookup{
				claims: map[string]*corev1.PersistentVolumeClaim{"shop/data-db-0": claim("data-db-0", "nfs")},
				pvs: map[string]*corev1.PersistentVolume{"nfs": {ObjectMeta: metav1.ObjectMeta{Name: "nfs"},
					Spec: corev1.PersistentVolumeSpec{PersistentVolumeSource: corev1.PersistentVolumeSource{NFS: &corev1.NFSVolumeSource{Server: "x", Path: "/"}}}}},
			},
		},
		{
			name:    "unbound claim with no PV",
			volumes: []corev1.Volume{pvcVol("data", "data-db-0")},
			lookup:  mapLookup{claims: map[string]*corev1.PersistentVolumeClaim{"shop/data-db-0": claim("data-db-0", "")}},
		},
		{
			name:    "bound PV missing from the cache",
			volumes: []corev1.Volume{pvcVol("data", "data-db-0")},
			lookup:  mapLookup{claims: map[string]*corev1.PersistentVolumeClaim{"shop/data-db-0": claim("data-db-0", "pv1")}},
			wantErr: "claim shop/data-db-0 is bound to PersistentVolume pv1, which the extender has not seen yet",
		},
		{
			name:    "Datera PV without backstoreServer",
			volumes: []corev1.Volume{pvcVol("data", "data-db-0")},
			lookup: mapLookup{pvs: map[string]*corev1.PersistentVolume{"pv1": pv("pv1", "data-db-0", func(p *corev1.PersistentVolume) {
				delete(p.Spec.FlexVolume.Options, pvoptions.OptBackstoreServer)
			})}},
			wantErr: `PersistentVolume pv1 uses driver datera/iscsi but lacks option "volumeID" or "backstoreServer"`,
		},
		{
			name:    "ReadWriteMany PV is not RWO; unlabelled PV has no pet",
			volumes: []corev1.Volume{pvcVol("data", "shared")},
			lookup: mapLookup{pvs: map[string]*corev1.PersistentVolume{"pv1": pv("pv1", "shared", func(p *corev1.PersistentVolume) {
				p.Spec.AccessModes = []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}
				p.Labels = nil
			})}},
			want: []Volume{{Claim: "shop/shared", PV: "pv1", VolumeID: "vol-pv1", Backstore: bsA}},
		},
		{
			name: "inline FlexVolume and a generic ephemeral volume",
			volumes: []corev1.Volume{
				{Name: "inline", VolumeSource: corev1.VolumeSource{FlexVolume: &corev1.FlexVolumeSource{Driver: FlexDriver,
					Options: map[string]string{pvoptions.OptVolumeID: "inline-1", pvoptions.OptBackstoreServer: bsB}}}},
				{Name: "other-flex", VolumeSource: corev1.VolumeSource{FlexVolume: &corev1.FlexVolumeSource{Driver: "acme/nfs"}}},
				{Name: "scratch", VolumeSource: corev1.VolumeSource{Ephemeral: &corev1.EphemeralVolumeSource{}}},
			},
			lookup: mapLookup{pvs: map[string]*corev1.PersistentVolume{"pv1": pv("pv1", "db-0-scratch", nil)}},
			want: []Volume{
				{VolumeID: "inline-1", Backstore: bsB, RWO: true},
				{Claim: "shop/db-0-scratch", PV: "pv1", VolumeID: "vol-pv1", Backstore: bsA, RWO: true, Pet: Pet{"shop", "db", 0}},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db-0"}, Spec: corev1.PodSpec{Volumes: tc.volumes}}
			got, err := PodVolumes(pod, tc.lookup)
			if tc.wantErr != "" {
				require.EqualError(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestReportRoundTrip(t *testing.T) {
	r := reportOf(map[string]map[string]PortalReport{bsA: {p1: ok(123 * time.Microsecond), p2: down("connection refused")}}, "a", "b")
	enc, err := r.Encode()
	require.NoError(t, err)
	assert.Contains(t, enc, `"rttMicros":123`)
	assert.Contains(t, enc, `"error":"connection refused"`)
	assert.Contains(t, enc, `"version":1`)
	back, err := DecodeReport(enc)
	require.NoError(t, err)
	assert.Equal(t, r.Backstores, back.Backstores)
	assert.Equal(t, r.Attached, back.Attached)
	assert.True(t, r.ProbedAt.Equal(back.ProbedAt))

	for _, tc := range []struct {
		name string
		mut  func(*Report)
		err  string
	}{
		{"version", func(r *Report) { r.Version = 0 }, "unsupported report version 0"},
		{"initiator", func(r *Report) { r.Initiator = "" }, "no initiator"},
		{"probedAt", func(r *Report) { r.ProbedAt = time.Time{} }, "no probedAt"},
		{"portal form", func(r *Report) { r.Backstores[bsA].Portals["10.1.1.7"] = ok(1) }, "not host:port"},
		{"error missing", func(r *Report) { r.Backstores[bsA].Portals[p3] = PortalReport{} }, "not ok but has no error"},
		{"unsorted", func(r *Report) { r.Attached = []string{"b", "a"} }, "not sorted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := reportOf(map[string]map[string]PortalReport{bsA: {p1: ok(time.Millisecond)}})
			tc.mut(r)
			_, err := r.Encode()
			require.ErrorContains(t, err, tc.err)
		})
	}
	_, err = DecodeReport("{not json")
	require.ErrorContains(t, err, "not valid JSON")
}

func TestLeaseName(t *testing.T) {
	assert.Equal(t, "petfabric-node-worker-1", LeaseName("worker-1"))
	long := strings.Repeat("a", 200) + "." + strings.Repeat("b", 52)
	n := LeaseName(long)
	assert.LessOrEqual(t, len(n), 253)
	assert.NotEqual(t, n, LeaseName(long+"c"), "distinct long names stay distinct")
	assert.Equal(t, n, LeaseName(long), "deterministic")
	assert.NotContains(t, n, ".-")
}

func TestNodeReportFromLease(t *testing.T) {
	good := reportOf(map[string]map[string]PortalReport{bsA: {p1: ok(time.Millisecond)}}, "v1")
	l := leaseFor(t, "a", good, 5*time.Second, ttl)
	nr, ok := NodeReportFromLease(l)
	require.True(t, ok)
	assert.Equal(t, "a", nr.Node)
	assert.Equal(t, ttl, nr.DeclaredTTL)
	assert.False(t, nr.Fresh(now), "not fresh before the reader observed it")
	nr.Observe(nil, now, 0)
	assert.Equal(t, ttl, nr.TTL)
	assert.True(t, nr.Fresh(now))
	assert.True(t, nr.Fresh(now.Add(ttl)), "fresh up to and including TTL after the observation")
	assert.False(t, nr.Fresh(now.Add(ttl+time.Millisecond)))
	assert.Contains(t, nr.Attached, "v1")

	other := l.DeepCopy()
	other.Spec.HolderIdentity = ptr.To("b") // a lease named for a but held by b is not a's report
	_, ok = NodeReportFromLease(other)
	assert.False(t, ok)

	noHolder := l.DeepCopy()
	noHolder.Spec.HolderIdentity = nil
	_, ok = NodeReportFromLease(noHolder)
	assert.False(t, ok)

	noTTL := l.DeepCopy()
	noTTL.Spec.LeaseDurationSeconds = nil
	nr, ok = NodeReportFromLease(noTTL)
	require.True(t, ok)
	nr.Observe(nil, now, 0)
	assert.False(t, nr.Fresh(now), "a report without a TTL is never fresh")
}

func TestIndex(t *testing.T) {
	good := map[string]map[string]PortalReport{bsA: {p1: ok(time.Millisecond)}}
	x := indexOf(t,
		leaseFor(t, "a", reportOf(good, "v1", "v2"), time.Second, ttl),
		leaseFor(t, "b", reportOf(good, "v2"), time.Second, ttl),
	)
	assert.Equal(t, []string{"a"}, x.Holders("v1"))
	assert.Equal(t, []string{"a", "b"}, x.Holders("v2"))

	// a detaches v1 and v2 and attaches v3.
	nr, _ := NodeReportFromLease(leaseFor(t, "a", reportOf(good, "v3"), time.Second, ttl))
	x.SetReport(nr)
	assert.Empty(t, x.Holders("v1"))
	assert.Equal(t, []string{"b"}, x.Holders("v2"))
	assert.Equal(t, []string{"a"}, x.Holders("v3"))

	x.DeleteReport("b")
	assert.Empty(t, x.Holders("v2"))
	_, found := x.NodeReport("b")
	assert.False(t, found)
	assert.Equal(t, 1, x.Nodes())

	x.SetPV(datersPV("pv-0", "db-0", "db", 0, 0))
	x.SetPV(datersPV("pv-1", "db-1", "db", 1, 1))
	assert.ElementsMatch(t, []PetVolume{{"db-0", 0}, {"db-1", 1}}, x.PetVolumes("shop", "db"))
	// Relabelling a PV moves it; deleting removes it.
	moved := datersPV("pv-1", "db-1", "web", 1, 1)
	x.SetPV(moved)
	assert.Equal(t, []PetVolume{{"db-0", 0}}, x.PetVolumes("shop", "db"))
	assert.Equal(t, []PetVolume{{"db-1", 1}}, x.PetVolumes("shop", "web"))
	x.DeletePV("pv-0")
	assert.Empty(t, x.PetVolumes("shop", "db"))
}
