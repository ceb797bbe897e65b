package webhook

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
)

// noopAdmit is the least any admission webhook does: decode the AdmissionReview with
// encoding/json and allow it, answering with the request's UID. It decides nothing, so it
// is the floor the webhook's handler is compared with in make bench's table.
var noopAdmit = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	var review admissionv1.AdmissionReview
	if err := json.NewDecoder(r.Body).Decode(&review); err != nil || review.Request == nil {
		http.Error(w, fmt.Sprintf("bad review: %v", err), http.StatusBadRequest)
		return
	}
	review.Response = &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}
	review.Request = nil
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(&review)
})

// BenchmarkAdmitNoop is the baseline of BenchmarkAdmitStatefulSet/datera-3x3: the same
// requests (a StatefulSet CREATE with three Datera templates × 3 replicas, a fresh name per
// op), the same in-memory recorder and the same percentiles (µs-p50, µs-p99), served by
// noopAdmit instead of the webhook. Run it with BenchmarkAdmitStatefulSet in one go test so
// both come from the same run.
func BenchmarkAdmitNoop(b *testing.B) {
	reqs := make([]*http.Request, b.N)
	for i := range reqs {
		sts := statefulSet("shop", fmt.Sprintf("web-%d", i), 3,
			dateraTemplate("data", "datera-gold", "10Gi"), dateraTemplate("logs", "datera-gold", "1Gi"), dateraTemplate("wal", "datera-gold", "2Gi"))
		body := reviewBody(b, stsRequest(b, admissionv1.Create, sts, nil))
		reqs[i] = httptest.NewRequest(http.MethodPost, PathStatefulSets+"?timeout=10s", bytes.NewReader(body))
		reqs[i].Header.Set("Content-Type", "application/json")
	}
	durations := make([]time.Duration, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		w := httptest.NewRecorder()
		start := time.Now()
		noopAdmit.ServeHTTP(w, reqs[i])
		durations[i] = time.Since(start)
		if w.Code != http.StatusOK {
			b.Fatalf("HTTP %d: %s", w.Code, w.Body.String())
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(pct(durations, 50).Nanoseconds())/1e3, "µs-p50")
	b.ReportMetric(float64(pct(durations, 99).Nanoseconds())/1e3, "µs-p99")
}
