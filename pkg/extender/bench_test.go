package extender

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	extenderv1 "k8s.io/kube-scheduler/extender/v1"
	"k8s.io/utils/ptr"

	"github.com/petfabric/petfabric/pkg/placement"

	"github.com/petfabric/petfabric/pkg/pvoptions"
)

// The benchmarks serve the real handler on a loopback httptest server and drive it with
// concurrent keep-alive clients sending pre-encoded requests, so what is measured is the
// extender (HTTP server, JSON, decision), not the client's encoding. Each reports p50/p99
// latency and req/s, next to two baselines over the same HTTP stack and the same request
// body: a no-op handler that reads the body and answers a constant, and the extender's
// own fast path (a pod without Datera volumes).

// staticSource is a Source over a fixed index (no informers: the state does not change).
type staticSource struct {
	lk placement.Lookup
	st *placement.Index
}

func (s staticSource) Read(fn func(placement.Lookup, placement.State)) { fn(s.lk, s.st) }

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
func (m mapLookup) PVForClaim(string, string) (*corev1.PersistentVolume, bool) {
	return nil, false
}

const (
	bsOne = "172.16.0.10:7717"
	bsTwo = "172.16.0.20:7717"
)

// benchState: n nodes with fresh reports over two backstores of two portals each; every
// 20th node has a refused portal, every 50th a stale report, every 100th none; the pod's
// three volumes (two on bsOne, one on bsTwo, pets of StatefulSet db) are not attached yet,
// and other pets of db are attached here and there. About 8% of the nodes fail.
func benchState(b testing.TB, n int) (staticSource, *corev1.Pod, []string) {
	now := time.Now()
	x := placement.NewIndex()
	names := make([]string, n)
	for i := range n {
		node := fmt.Sprintf("worker-%05d.dc1.example.com", i)
		names[i] = node
		if i%100 == 99 {
			continue
		}
		p := map[string]placement.PortalReport{"10.1.1.5:3260": {OK: true, RTTMicros: int64(150 + i%400)}, "10.1.1.6:3260": {OK: true, RTTMicros: 220}}
		if i%20 == 19 {
			p["10.1.1.6:3260"] = placement.PortalReport{Error: "connection refused"}
		}
		var attached []string
		if i%10 == 3 {
			attached = []string{fmt.Sprintf("db-%d-data", 1+i%5)}
		}
		r := &placement.Report{Version: 1, Initiator: "iqn.2024-01.example:" + node, ProbedAt: now, Attached: attached,
			Backstores: map[string]placement.BackstoreReport{bsOne: {Portals: p}, bsTwo: {Portals: map[string]placement.PortalReport{"10.2.1.5:3260": {OK: true, RTTMicros: 300}}}}}
		enc, err := r.Encode()
		if err != nil {
			b.Fatal(err)
		}
		renew := now
		if i%50 == 49 {
			renew = now.Add(-time.Hour)
		}
		l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: placement.LeaseName(node), Annotations: map[string]string{placement.ReportAnnotation: enc}},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(node), LeaseDurationSeconds: ptr.To(int32(3600)), RenewTime: &metav1.MicroTime{Time: renew}}}
		nr, ok := placement.NodeReportFromLease(l)
		if !ok || nr.Err != nil {
			b.Fatalf("bad bench lease %s: %v", node, nr.Err)
		}
		nr.Observe(nil, renew, 0) // seen when renewed: every 50th an hour ago, hence stale
		x.SetReport(nr)
	}
	lk := mapLookup{claims: map[string]*corev1.PersistentVolumeClaim{}, pvs: map[string]*corev1.PersistentVolume{}}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "db-0", Labels: map[string]string{"app": "db"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "db", Image: "postgres:16",
			Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: mustQ("500m"), corev1.ResourceMemory: mustQ("1Gi")}}}}}}
	for ord := range 6 {
		for j, tpl := range []string{"data", "wal", "logs"} {
			claim := fmt.Sprintf("%s-db-%d", tpl, ord)
			pvName := "datera-shop-" + claim
			bs := bsOne
			if j == 2 {
				bs = bsTwo
			}
			pv := &corev1.PersistentVolume{
				ObjectMeta: metav1.ObjectMeta{Name: pvName, Labels: map[string]string{placement.LabelStatefulSet: "db", placement.LabelOrdinal: fmt.Sprint(ord)}},
				Spec: corev1.PersistentVolumeSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
					ClaimRef: &corev1.ObjectReference{Namespace: "shop", Name: claim},
					PersistentVolumeSource: corev1.PersistentVolumeSource{FlexVolume: &corev1.FlexPersistentVolumeSource{Driver: placement.FlexDriver,
						Options: map[string]string{pvoptions.OptVolumeID: fmt.Sprintf("db-%d-%s", ord, tpl), pvoptions.OptBackstoreServer: bs}}}},
			}
			lk.pvs[pvName] = pv
			lk.claims["shop/"+claim] = &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: claim}, Spec: corev1.PersistentVolumeClaimSpec{VolumeName: pvName}}
			x.SetPV(pv)
			if ord == 0 {
				pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: tpl, VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}})
			}
		}
	}
	return staticSource{lk: lk, st: x}, pod, names
}

func mustQ(s string) resource.Quantity { return resource.MustParse(s) }

// kwokNode is a Node object shaped like the ones kube-scheduler sends in full-Node mode
// (labels, annotations, capacity, conditions, images omitted as kwok reports none).
func kwokNode(name string) json.RawMessage {
	n := corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("6f1c2b1e-2c1f-4c1a-9e7b-" + fmt.Sprintf("%012d", len(name))), ResourceVersion: "123456",
			CreationTimestamp: metav1.Now(),
			Labels: map[string]string{"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
				"type": "kwok", "topology.kubernetes.io/zone": "zone-a", "node.kubernetes.io/instance-type": "m5.2xlarge"},
			Annotations: map[string]string{"node.alpha.kubernetes.io/ttl": "0", "kwok.x-k8s.io/node": "fake",
				"volumes.kubernetes.io/controller-managed-attach-detach": "true"}},
		Spec: corev1.NodeSpec{PodCIDR: "10.244.1.0/24", PodCIDRs: []string{"10.244.1.0/24"}, ProviderID: "kwok://" + name},
		Status: corev1.NodeStatus{
			Capacity:    corev1.ResourceList{corev1.ResourceCPU: mustQ("32"), corev1.ResourceMemory: mustQ("256Gi"), corev1.ResourcePods: mustQ("110"), corev1.ResourceEphemeralStorage: mustQ("500Gi")},
			Allocatable: corev1.ResourceList{corev1.ResourceCPU: mustQ("32"), corev1.ResourceMemory: mustQ("256Gi"), corev1.ResourcePods: mustQ("110"), corev1.ResourceEphemeralStorage: mustQ("500Gi")},
			Addresses:   []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0.1"}, {Type: corev1.NodeHostName, Address: name}},
			NodeInfo: corev1.NodeSystemInfo{KubeletVersion: "v1.36.3", OperatingSystem: "linux", Architecture: "amd64",
				ContainerRuntimeVersion: "containerd://2.1.0", KernelVersion: "6.1.0", OSImage: "Debian GNU/Linux 12 (bookworm)"},
		},
	}
	for _, c := range []corev1.NodeConditionType{corev1.NodeReady, corev1.NodeMemoryPressure, corev1.NodeDiskPressure, corev1.NodePIDPressure, corev1.NodeNetworkUnavailable} {
		st := corev1.ConditionFalse
		if c == corev1.NodeReady {
			st = corev1.ConditionTrue
		}
		n.Status.Conditions = append(n.Status.Conditions, corev1.NodeCondition{Type: c, Status: st,
			LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now(), Reason: "Kubelet" + string(c), Message: "kubelet reports " + string(c)})
	}
	b, err := json.Marshal(n)
	if err != nil {
		panic(err)
	}
	return b
}

// result of one load run.
type loadResult struct {
	p50, p99 time.Duration
	rps      float64
}

// minLoadSamples is the fewest requests a load run times (see load).
const minLoadSamples = 300

// load posts body to url with `workers` concurrent keep-alive clients, b.N requests in
// all (at least minLoadSamples).
func load(b *testing.B, url string, body []byte, workers int) loadResult {
	return loadAtLeast(b, url, body, workers, minLoadSamples)
}

// loadAtLeast is load with at least minSamples requests (the encoding/json floor in
// full-Node mode takes half a second a request; its p99 is shown, never judged).
func loadAtLeast(b *testing.B, url string, body []byte, workers, minSamples int) loadResult {
	tr := &http.Transport{MaxIdleConnsPerHost: workers, MaxConnsPerHost: workers, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	// Warm the connections and check the answer once.
	resp, err := client.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		b.Fatal(err)
	}
	out, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("status %d: %s", resp.StatusCode, out)
	}
	var mu sync.Mutex
	var all []time.Duration
	// At least minLoadSamples requests, whatever b.N: a p99 of fewer samples is their
	// maximum (a full-Node body of 5,000 Nodes gets about 50 in the default second).
	n := max(b.N, minSamples)
	next := make(chan struct{}, n)
	for range n {
		next <- struct{}{}
	}
	close(next)
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lat := make([]time.Duration, 0, n/workers+1)
			for range next {
				t0 := time.Now()
				resp, err := client.Post(url, "application/json", bytes.NewReader(body))
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				lat = append(lat, time.Since(t0))
			}
			mu.Lock()
			all = append(all, lat...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	slices.Sort(all)
	q := func(p float64) time.Duration { return all[min(len(all)-1, int(p*float64(len(all))))] }
	r := loadResult{p50: q(0.50), p99: q(0.99), rps: float64(len(all)) / elapsed.Seconds()}
	b.ReportMetric(float64(r.p50.Microseconds()), "p50-µs")
	b.ReportMetric(float64(r.p99.Microseconds()), "p99-µs")
	b.ReportMetric(r.rps, "req/s")
	return r
}

func serve(b *testing.B, h http.Handler) *httptest.Server {
	srv := httptest.NewServer(h)
	b.Cleanup(srv.Close)
	return srv
}

// noop reads the body and answers a constant: the HTTP stack's own cost.
var noop = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"NodeNames":[],"Error":""}`))
})

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// BenchmarkNames5000 — nodeCacheCapable: true, 5,000 node names, a pod with 3 Datera volumes.
func BenchmarkNames5000(b *testing.B) {
	src, pod, names := benchState(b, 5000)
	plain := pod.DeepCopy()
	plain.Spec.Volumes = nil
	body := mustMarshal(b, extenderv1.ExtenderArgs{Pod: pod, NodeNames: &names})
	plainBody := mustMarshal(b, extenderv1.ExtenderArgs{Pod: plain, NodeNames: &names})
	b.Logf("request body %d bytes", len(body))
	loadRuns(b, src, body, plainBody)
}

// BenchmarkFullNodes500 — nodeCacheCapable: false, 500 complete Node objects.
func BenchmarkFullNodes500(b *testing.B) {
	src, pod, names := benchState(b, 500)
	items := make([]string, len(names))
	for i, n := range names {
		items[i] = string(kwokNode(n))
	}
	podJSON := mustMarshal(b, pod)
	body := []byte(`{"Pod":` + string(podJSON) + `,"Nodes":{"metadata":{},"items":[` + strings.Join(items, ",") + `]},"NodeNames":null}`)
	plain := pod.DeepCopy()
	plain.Spec.Volumes = nil
	plainBody := []byte(`{"Pod":` + string(mustMarshal(b, plain)) + `,"Nodes":{"metadata":{},"items":[` + strings.Join(items, ",") + `]},"NodeNames":null}`)
	b.Logf("request body %d bytes (%d bytes per node)", len(body), len(items[0]))
	loadRuns(b, src, body, plainBody)
}

// loadRuns measures filter and prioritize on body, filter on plainBody (a pod without
// Datera volumes: the fast path), a handler that does nothing with body (the baseline: HTTP
// and the body's transfer), and filter with one client, over real HTTP.
func loadRuns(b *testing.B, src Source, body, plainBody []byte) {
	srv := serve(b, NewHandler(src, HandlerOptions{Log: quiet(), Metrics: NewMetrics()}))
	noopSrv := serve(b, noop)
	const workers = 4
	b.Run("filter", func(b *testing.B) { load(b, srv.URL+FilterPath, body, workers) })
	b.Run("prioritize", func(b *testing.B) { load(b, srv.URL+PrioritizePath, body, workers) })
	b.Run("filter-fast-path", func(b *testing.B) { load(b, srv.URL+FilterPath, plainBody, workers) })
	b.Run("noop-baseline", func(b *testing.B) { load(b, noopSrv.URL, body, workers) })
	b.Run("sequential-filter", func(b *testing.B) { load(b, srv.URL+FilterPath, body, 1) })
}

// BenchmarkDecide isolates the pure decision (no HTTP, no JSON) for 5,000 names.
func BenchmarkDecide(b *testing.B) {
	src, pod, names := benchState(b, 5000)
	now := time.Now()
	vols, err := placement.PodVolumes(pod, src.lk)
	if err != nil || len(vols) != 3 {
		b.Fatalf("volumes %v %v", vols, err)
	}
	b.Run("filter", func(b *testing.B) {
		for b.Loop() {
			placement.Filter(now, vols, names, src.st, placement.AllPortals)
		}
	})
	b.Run("prioritize", func(b *testing.B) {
		for b.Loop() {
			placement.Prioritize(now, vols, names, src.st)
		}
	})
}

func mustMarshal(b *testing.B, v any) []byte {
	out, err := json.Marshal(v)
	if err != nil {
		b.Fatal(err)
	}
	return out
}

// stdlibFloor is the extender anyone would write first: decode ExtenderArgs with
// encoding/json into the upstream types (every Node decoded), answer with every node
// passing, encoded with encoding/json. It decides nothing, so it is the floor a real
// extender's throughput is compared with.
var stdlibFloor = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	var a extenderv1.ExtenderArgs
	if err := json.NewDecoder(r.Body).Decode(&a); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(extenderv1.ExtenderFilterResult{Nodes: a.Nodes, NodeNames: a.NodeNames})
})

// echoBody answers with the request body itself, byte for byte: the least any extender that
// hands the nodes back must do (read the body, write as much back), without parsing it. In
// full-Node mode it shows how much of a request's latency the transfer alone takes.
var echoBody = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	var buf bytes.Buffer
	buf.Grow(int(r.ContentLength) + bytes.MinRead) // one allocation, as the extender's pooled buffer
	if _, err := buf.ReadFrom(r.Body); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(buf.Len()))
	_, _ = w.Write(buf.Bytes())
})

// BenchmarkRows measures the table in one run with one load tool: for 500 and
// 5,000 node names and 500 and 5,000 full Node objects (a pod with 3 Datera volumes, ~8%
// of the nodes failing), the extender's filter next to the encoding/json decode+echo
// floor, a no-op handler and an echo handler (the body written back unparsed: what the
// transfer alone costs) over the same HTTP stack and body.
//
// Every shape is measured under two loads. "seq" is one call at a time: the way
// kube-scheduler calls an extender (its scheduling cycle handles one pod at a time and
// calls the extenders in turn, so no two filter calls of a scheduler overlap), and the
// shape the baseline figures were taken in (they only add up with one client:
// e.g. 49 req/s with a p99 of 57 ms). "conc4" is four clients at once on the same two
// cores: throughput under contention, more than one scheduler ever sends. The goals (names
// ≥ 2× the floor's req/s; 500 full Nodes p99 ≤ 3× the no-op's; 5,000 full Nodes p99 <
// 50 ms) are read from "seq"; "conc4" is printed beside them.
func BenchmarkRows(b *testing.B) {
	src, pod, names := benchState(b, 5000)
	podJSON := string(mustMarshal(b, pod))
	srv := serve(b, NewHandler(src, HandlerOptions{Log: quiet(), Metrics: NewMetrics()}))
	floorSrv := serve(b, stdlibFloor)
	noopSrv := serve(b, noop)
	echoSrv := serve(b, echoBody)
	type row struct {
		name                        string
		floor, noop, echo, extender loadResult
	}
	var rows []*row
	shapes := []struct {
		name string
		body func() []byte
	}{
		{"names500", func() []byte {
			nn := names[:500]
			return mustMarshal(b, extenderv1.ExtenderArgs{Pod: pod, NodeNames: &nn})
		}},
		{"names5000", func() []byte { return mustMarshal(b, extenderv1.ExtenderArgs{Pod: pod, NodeNames: &names}) }},
		{"fullNodes500", func() []byte { return fullNodesBody(podJSON, names[:500]) }},
		{"fullNodes5000", func() []byte { return fullNodesBody(podJSON, names) }},
	}
	for _, sh := range shapes {
		body := sh.body()
		for _, ld := range []struct {
			name    string
			workers int
		}{{"seq", 1}, {"conc4", 4}} {
			r := &row{name: fmt.Sprintf("%s %s (%d kB)", sh.name, ld.name, len(body)/1000)}
			rows = append(rows, r)
			prefix := sh.name + "/" + ld.name + "/"
			floorMin := minLoadSamples
			if strings.HasPrefix(sh.name, "fullNodes") {
				floorMin = 0
			}
			b.Run(prefix+"floor-encoding-json", func(b *testing.B) { r.floor = loadAtLeast(b, floorSrv.URL, body, ld.workers, floorMin) })
			b.Run(prefix+"noop", func(b *testing.B) { r.noop = load(b, noopSrv.URL, body, ld.workers) })
			b.Run(prefix+"echo-body", func(b *testing.B) { r.echo = load(b, echoSrv.URL, body, ld.workers) })
			b.Run(prefix+"petfabric-filter", func(b *testing.B) { r.extender = load(b, srv.URL+FilterPath, body, ld.workers) })
		}
	}
	var noise loadResult
	b.Run("machine-noise", func(b *testing.B) { noise = machineNoise(b) })
	ms := func(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }
	cell := func(l loadResult) string {
		return fmt.Sprintf("%8.1f req/s p50 %10s p99 %10s", l.rps, ms(l.p50), ms(l.p99))
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "\nmachine noise: a fixed pure-CPU loop, p50 %s p99 %s (%.2f×)", ms(noise.p50), ms(noise.p99), float64(noise.p99)/float64(noise.p50))
	fmt.Fprintf(&sb, "\n%-32s | %-44s | %-44s | %-44s | %-44s | %s\n", "request, load", "encoding/json floor", "no-op handler", "echo (body written back)", "petfabric filter", "petfabric req/s ÷ floor's, p99 ÷ no-op's, p99 ÷ echo's")
	for _, r := range rows {
		fmt.Fprintf(&sb, "%-32s | %s | %s | %s | %s | %.2f×, %.2f×, %.2f×\n", r.name, cell(r.floor), cell(r.noop), cell(r.echo), cell(r.extender),
			r.extender.rps/r.floor.rps, float64(r.extender.p99)/float64(r.noop.p99), float64(r.extender.p99)/float64(r.echo.p99))
	}
	// Printed, not logged: a parent benchmark's log only shows with -v.
	fmt.Print(sb.String())
}

// machineNoise times a fixed computation that allocates nothing and touches only a
// cache-sized buffer, b.N times: how far this machine alone (other tenants, frequency)
// stretches a p99 beyond the p50, to read the latency rows measured in the same run by.
func machineNoise(b *testing.B) loadResult {
	buf := make([]byte, 32<<10)
	for i := range buf {
		buf[i] = byte(i * 7)
	}
	lat := make([]time.Duration, 0, b.N)
	var sink uint64
	for b.Loop() {
		t0 := time.Now()
		h := uint64(14695981039346656037)
		for range 64 {
			for _, c := range buf {
				h = (h ^ uint64(c)) * 1099511628211
			}
		}
		sink += h
		lat = append(lat, time.Since(t0))
	}
	if sink == 1 {
		b.Log(sink) // keeps the loop from being optimised away
	}
	slices.Sort(lat)
	q := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	r := loadResult{p50: q(0.50), p99: q(0.99)}
	b.ReportMetric(float64(r.p50.Microseconds()), "p50-µs")
	b.ReportMetric(float64(r.p99.Microseconds()), "p99-µs")
	return r
}

// fullNodesBody is ExtenderArgs in full-Node mode (nodeCacheCapable: false).
func fullNodesBody(podJSON string, names []string) []byte {
	items := make([]string, len(names))
	for i, n := range names {
		items[i] = string(kwokNode(n))
	}
	return []byte(`{"Pod":` + podJSON + `,"Nodes":{"metadata":{},"items":[` + strings.Join(items, ",") + `]},"NodeNames":null}`)
}
