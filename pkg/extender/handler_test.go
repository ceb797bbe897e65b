package extender

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"
	testingclock "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/pkg/placement"

	"github.com/petfabric/petfabric/pkg/pvoptions"
)

const (
	ns        = "petfabric-system"
	backstore = "172.16.0.10:7717"
	portal1   = "10.1.1.5:3260"
	portal2   = "10.1.1.6:3260"
	leaseTTL  = 40
)

var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// reportLease builds a node's report Lease as the agent writes it.
func reportLease(t testing.TB, node string, portals map[string]placement.PortalReport, renewedAgo time.Duration, attached ...string) *coordinationv1.Lease {
	return reportLeaseAt(t, testNow, node, portals, renewedAgo, attached...)
}

func reportLeaseAt(t testing.TB, now time.Time, node string, portals map[string]placement.PortalReport, renewedAgo time.Duration, attached ...string) *coordinationv1.Lease {
	t.Helper()
	r := &placement.Report{Version: placement.ReportVersion, Initiator: "iqn.2024-01.test:" + node,
		ProbedAt: now.Add(-renewedAgo - time.Second), Attached: attached,
		Backstores: map[string]placement.BackstoreReport{backstore: {Portals: portals}}}
	enc, err := r.Encode()
	require.NoError(t, err)
	return &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Name: placement.LeaseName(node), Namespace: ns,
			Labels:      map[string]string{placement.LeaseManagedByLabel: placement.LeaseManagedByValue, placement.LeaseComponentLabel: placement.LeaseComponentValue},
			Annotations: map[string]string{placement.ReportAnnotation: enc}},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(node), LeaseDurationSeconds: ptr.To(int32(leaseTTL)),
			RenewTime: &metav1.MicroTime{Time: now.Add(-renewedAgo)}},
	}
}

func up(us int64) placement.PortalReport { return placement.PortalReport{OK: true, RTTMicros: us} }

func dateraPV(name, claimNS, claim, volumeID string) *corev1.PersistentVolume {
	return &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{placement.LabelStatefulSet: "db", placement.LabelOrdinal: "0"}},
		Spec: corev1.PersistentVolumeSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			ClaimRef:    &corev1.ObjectReference{Namespace: claimNS, Name: claim},
			PersistentVolumeSource: corev1.PersistentVolumeSource{FlexVolume: &corev1.FlexPersistentVolumeSource{
				Driver: placement.FlexDriver, Options: map[string]string{pvoptions.OptVolumeID: volumeID, pvoptions.OptBackstoreServer: backstore},
			}},
		},
	}
}

func claimPod(name string, claims ...string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: name}}
	for i, c := range claims {
		p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "v" + string(rune('0'+i)),
			VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: c}}})
	}
	return p
}

type fixture struct {
	client *fake.Clientset
	cache  *Cache
	// clock is shared by the Cache (which stamps observed renewals with it) and, unless the
	// test gave its own, the handler (which judges freshness with it).
	clock   *testingclock.FakeClock
	metrics *Metrics
	handler http.Handler
}

// newFixture starts a real Cache (informers) over a fake clientset holding objs. The cache
// observes each report Lease among objs at its renewTime, as an extender whose clock
// agrees with the nodes' would (freshness_test.go covers clocks that disagree). Then the
// clock is set to testNow and, unless opts.Now is given, the handler reads the same clock
// (fixture.clock), so a test can step both.
func newFixture(t *testing.T, opts HandlerOptions, objs ...runtime.Object) *fixture {
	t.Helper()
	var leases []*coordinationv1.Lease
	var others []runtime.Object
	for _, o := range objs {
		if l, ok := o.(*coordinationv1.Lease); ok {
			leases = append(leases, l)
			continue
		}
		others = append(others, o)
	}
	client := fake.NewClientset(others...)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	clk := testingclock.NewFakeClock(time.Time{})
	c, err := NewCache(client, ns, log, CacheOptions{Now: clk.Now})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); c.Shutdown() })
	c.Start(ctx)
	require.Eventually(t, c.Ready, 5*time.Second, 5*time.Millisecond)
	slices.SortStableFunc(leases, func(a, b *coordinationv1.Lease) int { return renewTime(a).Compare(renewTime(b)) })
	for _, l := range leases {
		clk.SetTime(renewTime(l))
		_, err := client.CoordinationV1().Leases(l.Namespace).Create(ctx, l, metav1.CreateOptions{})
		require.NoError(t, err)
		waitObserved(t, c, l)
	}
	if opts.Now == nil {
		opts.Now = clk.Now
		clk.SetTime(testNow)
	} else {
		clk.SetTime(opts.Now())
	}
	m := NewMetrics()
	opts.Metrics = m
	opts.Log = log
	return &fixture{client: client, cache: c, clock: clk, metrics: m, handler: NewHandler(c, opts)}
}

func renewTime(l *coordinationv1.Lease) time.Time {
	if l.Spec.RenewTime == nil {
		return testNow
	}
	return l.Spec.RenewTime.Time
}

// waitObserved waits until the cache holds l's renewTime for l's holder.
func waitObserved(t testing.TB, c *Cache, l *coordinationv1.Lease) {
	t.Helper()
	require.Eventually(t, func() bool {
		seen := false
		c.Read(func(_ placement.Lookup, st placement.State) {
			nr, ok := st.NodeReport(*l.Spec.HolderIdentity)
			seen = ok && (l.Spec.RenewTime == nil || nr.RenewTime.Equal(l.Spec.RenewTime.Time))
		})
		return seen
	}, 5*time.Second, time.Millisecond, "cache never observed Lease %s", l.Name)
}

// standard objects: pet db-0 with claim data-db-0 on PV pv-db-0 (volume vol-db-0); nodes
// a (good), b (no report), c (portal refused), d (stale).
func standardObjects(t testing.TB) []runtime.Object { return standardObjectsAt(t, testNow) }

func standardObjectsAt(t testing.TB, now time.Time) []runtime.Object {
	reportLease := func(t testing.TB, node string, portals map[string]placement.PortalReport, renewedAgo time.Duration) *coordinationv1.Lease {
		return reportLeaseAt(t, now, node, portals, renewedAgo)
	}
	return []runtime.Object{
		dateraPV("pv-db-0", "shop", "data-db-0", "vol-db-0"),
		&corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "data-db-0"},
			Spec: corev1.PersistentVolumeClaimSpec{VolumeName: "pv-db-0"}},
		reportLease(t, "a", map[string]placement.PortalReport{portal1: up(180), portal2: up(220)}, 3*time.Second),
		reportLease(t, "c", map[string]placement.PortalReport{portal1: {Error: "connection refused"}, portal2: up(200)}, 12*time.Second),
		reportLease(t, "d", map[string]placement.PortalReport{portal1: up(180), portal2: up(220)}, 2*time.Minute),
	}
}

func post(t *testing.T, h http.Handler, path string, body []byte) *httptest.ResponseRecorder {
	t.Helper()
	req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}

func TestFilterNodeNames(t *testing.T) {
	f := newFixture(t, HandlerOptions{}, standardObjects(t)...)
	names := []string{"a", "b", "c", "d"}
	// The request is encoded with the upstream type, exactly as kube-scheduler does.
	rec := post(t, f.handler, FilterPath, mustJSON(t, extenderv1.ExtenderArgs{Pod: claimPod("db-0", "data-db-0"), NodeNames: &names}))
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	assert.Equal(t, "application/json", rec.Header().Get("Content-Type"))

	var res extenderv1.ExtenderFilterResult
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &res))
	require.NotNil(t, res.NodeNames)
	assert.Equal(t, []string{"a"}, *res.NodeNames)
	assert.Nil(t, res.Nodes)
	assert.Empty(t, res.Error)
	assert.Empty(t, res.FailedNodes)
	assert.Equal(t, extenderv1.FailedNodesMap{
		"b": "no reachability report from the petfabric node agent (no petfabric-node-<node> Lease)",
		"c": "cannot reach portal 10.1.1.5:3260 of backstore 172.16.0.10:7717 (connection refused)",
		"d": "reachability report is stale (no renewal seen within its 40s validity); is the petfabric node agent running?",
	}, res.FailedAndUnresolvableNodes)

	assert.Equal(t, 1.0, testutil.ToFloat64(f.metrics.decisions.WithLabelValues("pass")))
	assert.Equal(t, 1.0, testutil.ToFloat64(f.metrics.decisions.WithLabelValues("no_report")))
	assert.Equal(t, 1.0, testutil.ToFloat64(f.metrics.decisions.WithLabelValues("portal_unreachable")))
	assert.Equal(t, 1.0, testutil.ToFloat64(f.metrics.decisions.WithLabelValues("stale_report")))
	assert.Equal(t, 1.0, testutil.ToFloat64(f.metrics.requests.WithLabelValues("filter", "200")))
}

// nodeJSON is a Node as kube-scheduler would send it, plus things this build's corev1.Node
// would lose or rewrite on a decode/encode round trip: a field from a newer API version and
// a non-canonical quantity ("1000m" re-encodes as "1").
func nodeJSON(name string) json.RawMessage {
	return json.RawMessage(`{"metadata":{"name":"` + name + `","uid":"u-` + name + `","labels":{"kubernetes.io/hostname":"` + name + `"},` +
		`"annotations":{"note":"<&>"}},"spec":{"futureField":{"x":[1,2,3]},"taints":[]},` +
		`"status":{"capacity":{"cpu":"1000m","memory":"1Gi"},"allocatable":{"cpu":"1000m","pods":"110"},"conditions":[{"type":"Ready","status":"True"}]}}`)
}

// fullArgs writes a full-Node ExtenderArgs by hand, so the node bytes are exactly
// nodeJSON's (json.Marshal would re-escape them).
func fullArgs(t testing.TB, pod *corev1.Pod, names ...string) []byte {
	items := make([]string, len(names))
	for i, n := range names {
		items[i] = string(nodeJSON(n))
	}
	return []byte(`{"Pod":` + string(mustJSON(t, pod)) + `,"Nodes":{"metadata":{"resourceVersion":"42"},"items":[` +
		strings.Join(items, ",") + `]},"NodeNames":null}`)
}

// rawFilterResult decodes a filter answer keeping the node items as bytes.
type rawFilterResult struct {
	Nodes *struct {
		Metadata json.RawMessage   `json:"metadata"`
		Items    []json.RawMessage `json:"items"`
	}
	NodeNames                  *[]string
	FailedAndUnresolvableNodes map[string]string
	Error                      string
}

func TestFilterFullNodesComeBackUnchanged(t *testing.T) {
	f := newFixture(t, HandlerOptions{}, standardObjects(t)...)
	rec := post(t, f.handler, FilterPath, fullArgs(t, claimPod("db-0", "data-db-0"), "a", "b", "c", "d"))
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())

	var raw rawFilterResult
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &raw))
	require.NotNil(t, raw.Nodes)
	require.Len(t, raw.Nodes.Items, 1)
	assert.Equal(t, string(nodeJSON("a")), string(raw.Nodes.Items[0]), "the passing Node must be byte-for-byte the one sent")
	assert.JSONEq(t, `{"resourceVersion":"42"}`, string(raw.Nodes.Metadata))
	assert.Nil(t, raw.NodeNames)
	assert.Len(t, raw.FailedAndUnresolvableNodes, 3)

	// And the upstream type, which kube-scheduler decodes into, accepts the answer.
	var res extenderv1.ExtenderFilterResult
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &res))
	require.NotNil(t, res.Nodes)
	require.Len(t, res.Nodes.Items, 1)
	assert.Equal(t, "a", res.Nodes.Items[0].Name)
	assert.Equal(t, "1", res.Nodes.Items[0].Status.Capacity.Cpu().String())
}

func TestFilterFastPath(t *testing.T) {
	f := newFixture(t, HandlerOptions{}, standardObjects(t)...)
	plain := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"},
		Spec: corev1.PodSpec{Volumes: []corev1.Volume{{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}}}

	t.Run("names", func(t *testing.T) {
		names := []string{"a", "b", "c", "d"}
		rec := post(t, f.handler, FilterPath, mustJSON(t, extenderv1.ExtenderArgs{Pod: plain, NodeNames: &names}))
		var res extenderv1.ExtenderFilterResult
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &res))
		assert.Equal(t, names, *res.NodeNames, "nodes without reports pass for pods without Datera volumes")
		assert.Empty(t, res.FailedAndUnresolvableNodes)
	})
	t.Run("full nodes echoed verbatim", func(t *testing.T) {
		body := fullArgs(t, plain, "a", "b")
		rec := post(t, f.handler, FilterPath, body)
		require.Equal(t, http.StatusOK, rec.Code)
		var in, out struct{ Nodes json.RawMessage }
		require.NoError(t, json.Unmarshal(body, &in))
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &out))
		assert.Equal(t, string(in.Nodes), string(out.Nodes))
	})
	t.Run("claim of another driver", func(t *testing.T) {
		names := []string{"b"}
		rec := post(t, f.handler, FilterPath, mustJSON(t, extenderv1.ExtenderArgs{Pod: claimPod("x", "unknown-claim"), NodeNames: &names}))
		var res extenderv1.ExtenderFilterResult
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &res))
		assert.Equal(t, names, *res.NodeNames)
	})
	assert.Equal(t, 3.0, testutil.ToFloat64(f.metrics.decisions.WithLabelValues("fast_path")))
}

func TestFilterBadRequests(t *testing.T) {
	f := newFixture(t, HandlerOptions{MaxBodyBytes: 4096},
		dateraPV("pv-broken", "shop", "broken", ""), standardObjects(t)[0])
	names := []string{"a"}
	tests := []struct {
		name     string
		method   string
		body     []byte
		chunked  bool
		code     int
		bodyHas  string
		errorHas string // ExtenderFilterResult.Error
	}{
		{name: "malformed JSON", body: []byte(`{"Pod": {`), code: 400, bodyHas: "malformed ExtenderArgs JSON"},
		{name: "wrong JSON type", body: []byte(`{"NodeNames": "a"}`), code: 400, bodyHas: "malformed ExtenderArgs JSON"},
		{name: "oversized with Content-Length", body: bytes.Repeat([]byte(" "), 5000), code: 413, bodyHas: "exceeds the limit of 4096 bytes"},
		{name: "oversized chunked", body: bytes.Repeat([]byte(" "), 5000), chunked: true, code: 413, bodyHas: "exceeds the limit of 4096 bytes"},
		{name: "wrong method", method: http.MethodGet, code: 405},
		{name: "missing pod", body: mustJSON(t, extenderv1.ExtenderArgs{NodeNames: &names}), code: 200, errorHas: "ExtenderArgs has no Pod"},
		{name: "neither names nor nodes", body: mustJSON(t, extenderv1.ExtenderArgs{Pod: claimPod("db-0", "data-db-0")}), code: 200, errorHas: "neither NodeNames"},
		{
			name: "Datera PV without volumeID", body: mustJSON(t, extenderv1.ExtenderArgs{Pod: claimPod("db-9", "broken"), NodeNames: &names}),
			code: 200, errorHas: `pod shop/db-9: PersistentVolume pv-broken uses driver datera/iscsi but lacks option "volumeID" or "backstoreServer"`,
		},
		{name: "node without name", body: []byte(`{"Pod":{"metadata":{"name":"p","namespace":"shop"},"spec":{"volumes":[{"name":"d","persistentVolumeClaim":{"claimName":"data-db-0"}}]}},"Nodes":{"items":[{"metadata":{}}]}}`), code: 400, bodyHas: "Nodes.items[0] has no metadata.name"},
		{name: "node not an object", body: []byte(`{"Nodes":{"items":[7]}}`), code: 400, bodyHas: "Nodes.items[0] is not an object"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			method := tc.method
			if method == "" {
				method = http.MethodPost
			}
			var body io.Reader = bytes.NewReader(tc.body)
			if tc.chunked {
				body = io.MultiReader(body) // hides the length: no Content-Length
			}
			req := httptest.NewRequest(method, FilterPath, body)
			if tc.chunked {
				req.ContentLength = -1
			}
			rec := httptest.NewRecorder()
			f.handler.ServeHTTP(rec, req)
			require.Equal(t, tc.code, rec.Code, rec.Body.String())
			if tc.bodyHas != "" {
				assert.Contains(t, rec.Body.String(), tc.bodyHas)
			}
			if tc.errorHas != "" {
				var res extenderv1.ExtenderFilterResult
				require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &res))
				assert.Contains(t, res.Error, tc.errorHas)
				assert.Nil(t, res.NodeNames)
				assert.Nil(t, res.Nodes)
			}
		})
	}
	assert.Equal(t, 2.0, testutil.ToFloat64(f.metrics.requests.WithLabelValues("filter", "413")))
}

func TestPrioritizeHandler(t *testing.T) {
	objs := append(standardObjects(t),
		reportLease(t, "e", map[string]placement.PortalReport{portal1: up(3000), portal2: up(200)}, time.Second),
		reportLease(t, "f", map[string]placement.PortalReport{portal1: up(100), portal2: up(100)}, time.Second, "vol-db-0"),
	)
	f := newFixture(t, HandlerOptions{}, objs...)
	names := []string{"a", "e", "f", "b"}
	rec := post(t, f.handler, PrioritizePath, mustJSON(t, extenderv1.ExtenderArgs{Pod: claimPod("db-0", "data-db-0"), NodeNames: &names}))
	require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	var res extenderv1.HostPriorityList
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &res))
	// a: 6 rtt + 0 + 2 spread; e: 3 ms → 2 + 2; f: 6 + 2 attached + 2; b: no report.
	assert.Equal(t, extenderv1.HostPriorityList{{Host: "a", Score: 8}, {Host: "e", Score: 4}, {Host: "f", Score: 10}, {Host: "b", Score: 0}}, res)

	t.Run("full nodes", func(t *testing.T) {
		rec := post(t, f.handler, PrioritizePath, fullArgs(t, claimPod("db-0", "data-db-0"), "f", "a"))
		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &res))
		assert.Equal(t, extenderv1.HostPriorityList{{Host: "f", Score: 10}, {Host: "a", Score: 8}}, res)
	})
	t.Run("no pod", func(t *testing.T) {
		rec := post(t, f.handler, PrioritizePath, mustJSON(t, extenderv1.ExtenderArgs{NodeNames: &names}))
		assert.Equal(t, http.StatusBadRequest, rec.Code)
		assert.Contains(t, rec.Body.String(), "no Pod")
	})
	t.Run("malformed", func(t *testing.T) {
		rec := post(t, f.handler, PrioritizePath, []byte("[]"))
		assert.Equal(t, http.StatusBadRequest, rec.Code)
	})
}

// TestCacheFollowsLeaseChanges drives the informer path: updates and deletes of report
// Leases and PVs change the next decision.
func TestCacheFollowsLeaseChanges(t *testing.T) {
	f := newFixture(t, HandlerOptions{}, standardObjects(t)...)
	ctx := context.Background()
	names := []string{"a", "c"}
	filter := func() extenderv1.ExtenderFilterResult {
		rec := post(t, f.handler, FilterPath, mustJSON(t, extenderv1.ExtenderArgs{Pod: claimPod("db-0", "data-db-0"), NodeNames: &names}))
		var res extenderv1.ExtenderFilterResult
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &res))
		return res
	}
	require.Equal(t, []string{"a"}, *filter().NodeNames)

	// c's portal comes back.
	fixed := reportLease(t, "c", map[string]placement.PortalReport{portal1: up(200), portal2: up(200)}, time.Second)
	_, err := f.client.CoordinationV1().Leases(ns).Update(ctx, fixed, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(*filter().NodeNames) == 2 }, 5*time.Second, 10*time.Millisecond)

	// a starts holding the RWO volume: c is blocked.
	holding := reportLease(t, "a", map[string]placement.PortalReport{portal1: up(200), portal2: up(200)}, time.Second, "vol-db-0")
	_, err = f.client.CoordinationV1().Leases(ns).Update(ctx, holding, metav1.UpdateOptions{})
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		res := filter()
		return len(*res.NodeNames) == 1 && strings.Contains(res.FailedAndUnresolvableNodes["c"], "still attached to node a")
	}, 5*time.Second, 10*time.Millisecond)

	// a's Lease is deleted: no holder any more, and a has no report.
	require.NoError(t, f.client.CoordinationV1().Leases(ns).Delete(ctx, placement.LeaseName("a"), metav1.DeleteOptions{}))
	require.Eventually(t, func() bool {
		res := filter()
		return len(*res.NodeNames) == 1 && (*res.NodeNames)[0] == "c" && strings.Contains(res.FailedAndUnresolvableNodes["a"], "no reachability report")
	}, 5*time.Second, 10*time.Millisecond)

	// An unlabelled Lease in the namespace is not a report (the informer selects by label).
	stray := reportLease(t, "z", map[string]placement.PortalReport{portal1: up(1)}, time.Second)
	stray.Labels = nil
	_, err = f.client.CoordinationV1().Leases(ns).Create(ctx, stray, metav1.CreateOptions{})
	require.NoError(t, err)
	names = []string{"z"}
	time.Sleep(100 * time.Millisecond)
	assert.Contains(t, filter().FailedAndUnresolvableNodes["z"], "no reachability report")
}
