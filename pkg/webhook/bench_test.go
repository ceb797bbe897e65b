package webhook

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
)

// BenchmarkAdmitStatefulSet measures the handler without I/O — in-memory PVStore, static
// Lookup, Server.Handler() with httptest.NewRecorder, no network — for a StatefulSet CREATE:
//
//   - no-datera: three claim templates of another storage (the fast path: decode, decide,
//     allow), the baseline;
//   - datera-3x3: three Datera templates × 3 replicas (decode, decide, patch, 9 PVs built and
//     created concurrently).
//
// Each op is a fresh StatefulSet name, so every PV is really created. Per-op latencies give
// p50 and p99 (µs); datera-3x3 also reports its p50 and p99 as multiples of the baseline's
// from the same run. Goal: p99 < 200 µs. Run: go test -run XXX -bench AdmitStatefulSet
// -benchtime 2000x ./pkg/webhook/
func BenchmarkAdmitStatefulSet(b *testing.B) {
	var baseline []time.Duration
	b.Run("no-datera", func(b *testing.B) {
		baseline = benchAdmit(b, "standard")
	})
	b.Run("datera-3x3", func(b *testing.B) {
		d := benchAdmit(b, "datera-gold")
		if len(baseline) > 0 {
			b.ReportMetric(float64(pct(d, 50))/float64(pct(baseline, 50)), "x-baseline-p50")
			b.ReportMetric(float64(pct(d, 99))/float64(pct(baseline, 99)), "x-baseline-p99")
		}
	})
}

func benchAdmit(b *testing.B, class string) []time.Duration {
	f := newFixture(b)
	bodies := make([][]byte, b.N)
	for i := range bodies {
		sts := statefulSet("shop", fmt.Sprintf("web-%d", i), 3,
			dateraTemplate("data", class, "10Gi"), dateraTemplate("logs", class, "1Gi"), dateraTemplate("wal", class, "2Gi"))
		bodies[i] = reviewBody(b, stsRequest(b, admissionv1.Create, sts, nil))
	}
	reqs := make([]*http.Request, b.N)
	for i, body := range bodies {
		reqs[i] = httptest.NewRequest(http.MethodPost, PathStatefulSets+"?timeout=10s", bytes.NewReader(body))
		reqs[i].Header.Set("Content-Type", "application/json")
	}
	durations := make([]time.Duration, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if i%100 == 0 {
			// The webhook keeps no PVs; neither should the benchmark's heap (a growing
			// store would only make every GC, and so the tail, slower).
			f.pvs.mu.Lock()
			clear(f.pvs.pvs)
			f.pvs.mu.Unlock()
		}
		w := httptest.NewRecorder()
		start := time.Now()
		f.h.ServeHTTP(w, reqs[i])
		durations[i] = time.Since(start)
		if w.Code != http.StatusOK {
			b.Fatalf("HTTP %d: %s", w.Code, w.Body.String())
		}
	}
	b.StopTimer()
	want := 0
	if class != "standard" {
		want = 9 * b.N
	}
	if got := int(f.pvs.creates.Load()); got != want {
		b.Fatalf("%d PVs created, want %d", got, want)
	}
	b.ReportMetric(float64(pct(durations, 50).Nanoseconds())/1e3, "µs-p50")
	b.ReportMetric(float64(pct(durations, 99).Nanoseconds())/1e3, "µs-p99")
	return durations
}

// pct is the p-th percentile (nearest rank).
func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(i-1, 0)]
}
