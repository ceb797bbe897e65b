package webhook

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

var allPaths = []string{PathStatefulSets, PathScale, PathClaims}

// TestUIDEcho: every answer carries the request's UID and the request's apiVersion/kind,
// whatever the outcome (allowed, patched, denied).
func TestUIDEcho(t *testing.T) {
	f := newFixture(t)
	sts := statefulSet("shop", "web", 1, dateraTemplate("data", "datera-gold", "1Gi"))
	bad := statefulSet("shop", "bad", 1, dateraTemplate("data", "datera-gold", "1Gi"))
	bad.Spec.VolumeClaimTemplates[0].Annotations = map[string]string{"petfabric.io/replica": "6"}
	for name, tc := range map[string]struct {
		path string
		req  *admissionv1.AdmissionRequest
	}{
		"patched":            {PathStatefulSets, stsRequest(t, admissionv1.Create, sts, nil)},
		"denied":             {PathStatefulSets, stsRequest(t, admissionv1.Create, bad, nil)},
		"allowed, no change": {PathStatefulSets, stsRequest(t, admissionv1.Delete, sts, nil)},
		"scale":              {PathScale, scaleRequest(t, "shop", "absent", 1, 2)},
		"claim":              {PathClaims, claimRequest(t, admissionv1.Create, &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "x", Namespace: "shop"}})},
	} {
		t.Run(name, func(t *testing.T) {
			resp := f.admit(t, tc.path, tc.req) // checks UID, apiVersion, kind
			assert.NotEmpty(t, resp.UID)
		})
	}
}

// TestReviewEnvelopeErrors: requests that are not admission reviews get an HTTP error with a
// Status body (there is no UID to answer to), as controller-runtime's checks do.
func TestReviewEnvelopeErrors(t *testing.T) {
	f := newFixture(t)
	valid := reviewBody(t, claimRequest(t, admissionv1.Create, &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "x", Namespace: "shop"}}))
	cases := []struct {
		name        string
		method      string
		body        []byte
		contentType string
		wantCode    int
		wantMsg     string
	}{
		{"wrong content type", http.MethodPost, valid, "text/plain", http.StatusBadRequest, `content type "text/plain": want application/json`},
		{"no content type", http.MethodPost, valid, "", http.StatusBadRequest, "want application/json"},
		{"malformed content type", http.MethodPost, valid, "application/json; =", http.StatusBadRequest, "want application/json"},
		{"yaml", http.MethodPost, valid, "application/yaml", http.StatusBadRequest, "want application/json"},
		{"empty body", http.MethodPost, nil, "application/json", http.StatusBadRequest, "empty body"},
		{"not JSON", http.MethodPost, []byte("{nope"), "application/json", http.StatusBadRequest, "decode AdmissionReview"},
		{"JSON but not an object", http.MethodPost, []byte(`[1]`), "application/json", http.StatusBadRequest, "decode AdmissionReview"},
		{"empty object", http.MethodPost, []byte(`{}`), "application/json", http.StatusBadRequest, "no request"},
		{"another kind", http.MethodPost, []byte(`{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"}}`), "application/json", http.StatusBadRequest, "no request"},
		{"a response, not a request", http.MethodPost, []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"u","allowed":true}}`), "application/json", http.StatusBadRequest, "no request"},
		{"v1beta1 review", http.MethodPost, bytes.Replace(valid, []byte("admission.k8s.io/v1"), []byte("admission.k8s.io/v1beta1"), 1), "application/json", http.StatusBadRequest, "want admission.k8s.io/v1 AdmissionReview"},
		{"wrong kind with a request", http.MethodPost, bytes.Replace(valid, []byte(`"kind":"AdmissionReview"`), []byte(`"kind":"Review"`), 1), "application/json", http.StatusBadRequest, "want admission.k8s.io/v1 AdmissionReview"},
		{"GET", http.MethodGet, nil, "", http.StatusMethodNotAllowed, "POSTed"},
		{"PUT", http.MethodPut, valid, "application/json", http.StatusMethodNotAllowed, "POSTed"},
	}
	for _, tc := range cases {
		for _, path := range allPaths {
			t.Run(tc.name+" "+path, func(t *testing.T) {
				r := httptest.NewRequest(tc.method, path, bytes.NewReader(tc.body))
				if tc.contentType != "" {
					r.Header.Set("Content-Type", tc.contentType)
				}
				w := httptest.NewRecorder()
				f.h.ServeHTTP(w, r)
				assert.Equal(t, tc.wantCode, w.Code)
				var st metav1.Status
				require.NoError(t, json.Unmarshal(w.Body.Bytes(), &st), w.Body.String())
				assert.Equal(t, "Status", st.Kind)
				assert.Equal(t, int32(tc.wantCode), st.Code)
				assert.Contains(t, st.Message, tc.wantMsg)
			})
		}
	}
	// charset parameters are fine.
	w := post(f.h, PathClaims, valid, "application/json; charset=utf-8")
	assert.Equal(t, http.StatusOK, w.Code)
}

// TestBodyLimit: 7 MiB is accepted, one byte more is 413.
func TestBodyLimit(t *testing.T) {
	f := newFixture(t)
	req := claimRequest(t, admissionv1.Create, &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "x", Namespace: "shop"}})
	body := reviewBody(t, req)
	padded := append(body, bytes.Repeat([]byte(" "), MaxBodyBytes-len(body))...) // JSON allows trailing whitespace
	require.Len(t, padded, 7<<20)
	checkReview(t, post(f.h, PathClaims, padded, "application/json"), req.UID)

	for _, path := range allPaths {
		w := post(f.h, path, append(padded, ' '), "application/json")
		assert.Equal(t, http.StatusRequestEntityTooLarge, w.Code, path)
		assert.Contains(t, w.Body.String(), "larger than 7340032 bytes")
	}
	// A much larger body is cut off after the limit, not read whole.
	big := &countingReader{n: 64 << 20}
	r := httptest.NewRequest(http.MethodPost, PathStatefulSets, big)
	r.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, r)
	assert.Equal(t, http.StatusRequestEntityTooLarge, w.Code)
	assert.LessOrEqual(t, big.read, MaxBodyBytes+1+32<<10, "read only up to the limit")
}

// countingReader yields n spaces and counts what was read.
type countingReader struct{ n, read int }

func (c *countingReader) Read(p []byte) (int, error) {
	if c.read >= c.n {
		return 0, io.EOF
	}
	k := min(len(p), c.n-c.read)
	for i := range k {
		p[i] = ' '
	}
	c.read += k
	return k, nil
}

// TestPanicIsErrored: a panic in a handler becomes an Errored review (HTTP 200, allowed false,
// code 500, UID set) so failurePolicy decides, and is counted as an error.
func TestPanicIsErrored(t *testing.T) {
	f := newFixture(t)
	f.lookup.panicWith = "lookup exploded"
	sts := statefulSet("shop", "web", 2, dateraTemplate("data", "datera-gold", "1Gi"))
	pvc := claimOf(sts, 0, 0)
	f.lookup.sts["shop/web"] = sts
	for _, tc := range []struct {
		route, path string
		req         *admissionv1.AdmissionRequest
	}{
		{"statefulsets", PathStatefulSets, stsRequest(t, admissionv1.Create, sts, nil)},
		{"scale", PathScale, scaleRequest(t, "shop", "web", 2, 3)},
		{"persistentvolumeclaims", PathClaims, claimRequest(t, admissionv1.Create, pvc)},
	} {
		t.Run(tc.route, func(t *testing.T) {
			resp := f.admit(t, tc.path, tc.req)
			assert.False(t, resp.Allowed)
			assert.Equal(t, int32(http.StatusInternalServerError), resp.Result.Code)
			assert.Equal(t, metav1.StatusReasonInternalError, resp.Result.Reason)
			assert.Equal(t, "internal error in petfabric webhook: lookup exploded", resp.Result.Message)
			assert.Equal(t, 1.0, testutil.ToFloat64(f.srv.metrics.requests.WithLabelValues(tc.route, "error")))
		})
	}
	assert.Empty(t, f.pvs.names())
}

// TestMetrics: each review is counted by route and result, and timed.
func TestMetrics(t *testing.T) {
	f := newFixture(t)
	sts := statefulSet("shop", "web", 2, dateraTemplate("data", "datera-gold", "1Gi"))
	f.admit(t, PathStatefulSets, stsRequest(t, admissionv1.Create, sts, nil))
	bad := sts.DeepCopy()
	bad.Spec.VolumeClaimTemplates[0].Annotations = map[string]string{"petfabric.io/fsType": "zfs"}
	f.admit(t, PathStatefulSets, stsRequest(t, admissionv1.Create, bad, nil))
	live := sts.DeepCopy()
	live.Spec.Replicas = ptr.To[int32](6)
	f.lookup.put(pinned(t, newFixture(t), live))
	f.admit(t, PathClaims, claimRequest(t, admissionv1.Create, claimOf(pinned(t, newFixture(t), live), 0, 5)))
	f.admit(t, PathScale, scaleRequest(t, "shop", "web", 3, 1))
	post(f.h, PathClaims, []byte("x"), "application/json")

	m := f.srv.metrics
	assert.Equal(t, 1.0, testutil.ToFloat64(m.requests.WithLabelValues("statefulsets", "patched")))
	assert.Equal(t, 1.0, testutil.ToFloat64(m.requests.WithLabelValues("statefulsets", "denied")))
	assert.Equal(t, 1.0, testutil.ToFloat64(m.requests.WithLabelValues("persistentvolumeclaims", "allowed")))
	assert.Equal(t, 1.0, testutil.ToFloat64(m.requests.WithLabelValues("scale", "allowed")))
	assert.Equal(t, 1.0, testutil.ToFloat64(m.requests.WithLabelValues("persistentvolumeclaims", "error")), "a malformed review counts as an error")
	assert.Equal(t, 3.0, testutil.ToFloat64(m.pvCreated))
	n, err := testutil.GatherAndCount(f.reg, "petfabric_webhook_admission_duration_seconds")
	require.NoError(t, err)
	assert.Equal(t, 3, n, "one histogram per route")
	problems, err := testutil.GatherAndLint(f.reg)
	require.NoError(t, err)
	assert.Empty(t, problems)
}

func TestDenialReasons(t *testing.T) {
	for code, reason := range map[int32]metav1.StatusReason{
		400: metav1.StatusReasonBadRequest, 409: metav1.StatusReasonConflict, 422: metav1.StatusReasonInvalid,
		403: metav1.StatusReasonForbidden, 500: metav1.StatusReasonInternalError,
	} {
		r := denied(code, "m")
		assert.False(t, r.Allowed)
		assert.Equal(t, reason, r.Result.Reason)
		assert.Equal(t, metav1.StatusFailure, r.Result.Status)
	}
	assert.True(t, strings.HasPrefix(resultOf(denied(500, "")), "error"))
}
