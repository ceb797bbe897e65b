package webhook

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	sigsjson "sigs.k8s.io/json"

	"github.com/petfabric/petfabric/pkg/mutate"
)

// The fuzz targets check the server as the apiserver sees it: whatever the body, the handler
// never panics (the server's recover would hide it behind an Errored review, so such a review
// is a failure here), every 200 answer is a well-formed AdmissionReview for the request's UID,
// and a patch, if any, applies cleanly to the object it was computed for.
//
// Inputs whose replicas exceed maxFuzzReplicas are skipped: TestBugHugeReplicas (reported)
// would make them exhaust memory or time rather than find anything new.

const maxFuzzReplicas = 64

var fuzzPaths = []string{PathStatefulSets, PathClaims, PathScale}

// fuzzFixture is one server per fuzz worker; its PV store is emptied now and then so a long
// run does not grow without bound.
func fuzzFixture(f *testing.F) *fixture {
	fx := newFixture(f)
	fx.lookup.put(statefulSet("shop", "web", 2, dateraTemplate("data", "datera-gold", "1Gi")))
	return fx
}

func (fx *fixture) resetIfBig() {
	fx.pvs.mu.Lock()
	defer fx.pvs.mu.Unlock()
	if len(fx.pvs.pvs) > 5000 {
		fx.pvs.pvs = map[string]*corev1.PersistentVolume{}
	}
}

// tooManyReplicas reports whether a review asks for more ordinals than the fuzzer should try.
func tooManyReplicas(body []byte) bool {
	var review admissionv1.AdmissionReview
	if json.Unmarshal(body, &review) != nil || review.Request == nil {
		return false
	}
	for _, obj := range []runtime.RawExtension{review.Request.Object, review.Request.OldObject} {
		var sts appsv1.StatefulSet
		if json.Unmarshal(obj.Raw, &sts) == nil && sts.Spec.Replicas != nil && *sts.Spec.Replicas > maxFuzzReplicas {
			return true
		}
		var scale autoscalingv1.Scale
		if json.Unmarshal(obj.Raw, &scale) == nil && scale.Spec.Replicas > maxFuzzReplicas {
			return true
		}
	}
	return false
}

// checkFuzzAnswer asserts the invariants; it returns the response of a 200 answer.
func checkFuzzAnswer(t *testing.T, code int, respBody, reqBody []byte) *admissionv1.AdmissionResponse {
	t.Helper()
	if code != http.StatusOK {
		if code != http.StatusBadRequest && code != http.StatusRequestEntityTooLarge {
			t.Fatalf("HTTP %d: %s", code, respBody)
		}
		var st metav1.Status
		if err := json.Unmarshal(respBody, &st); err != nil || st.Code != int32(code) {
			t.Fatalf("HTTP %d without a Status body: %s", code, respBody)
		}
		return nil
	}
	var in admissionv1.AdmissionReview
	if err := json.Unmarshal(reqBody, &in); err != nil || in.Request == nil {
		t.Fatalf("HTTP 200 for a body that is not a review (%v): %q", err, reqBody)
	}
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(respBody, &out); err != nil {
		t.Fatalf("response is not JSON: %v: %s", err, respBody)
	}
	r := out.Response
	switch {
	case out.APIVersion != "admission.k8s.io/v1" || out.Kind != "AdmissionReview":
		t.Fatalf("response envelope %s %s", out.APIVersion, out.Kind)
	case r == nil:
		t.Fatalf("no response: %s", respBody)
	case r.UID != in.Request.UID:
		t.Fatalf("UID %q, want %q", r.UID, in.Request.UID)
	case r.Result != nil && strings.Contains(r.Result.Message, "internal error in petfabric webhook"):
		t.Fatalf("handler panicked: %s", r.Result.Message)
	case !r.Allowed && (r.Result == nil || r.Result.Code == 0):
		t.Fatalf("denial without a status: %s", respBody)
	case (len(r.Patch) > 0) != (r.PatchType != nil):
		t.Fatalf("patch and patchType not together: %s", respBody)
	}
	if len(r.Patch) > 0 {
		if !r.Allowed || *r.PatchType != admissionv1.PatchTypeJSONPatch {
			t.Fatalf("patch on a denial or of type %s", *r.PatchType)
		}
		applied, err := applyPatchE(in.Request.Object.Raw, r.Patch)
		if err != nil {
			t.Fatalf("patch %s does not apply to %s: %v", r.Patch, in.Request.Object.Raw, err)
		}
		if !json.Valid(applied) {
			t.Fatalf("patched object is not JSON: %s", applied)
		}
	}
	return r
}

func applyPatchE(doc, patch []byte) ([]byte, error) {
	var out []byte
	var err error
	func() {
		defer func() {
			if p := recover(); p != nil {
				err = errPanic{p}
			}
		}()
		out, err = applyPatchNoTB(doc, patch)
	}()
	return out, err
}

type errPanic struct{ v any }

func (e errPanic) Error() string { return "json-patch panicked" }

// FuzzAdmissionReview feeds arbitrary bytes as the body of each admission route.
func FuzzAdmissionReview(f *testing.F) {
	seed := func(req *admissionv1.AdmissionRequest) []byte { return reviewBody(f, req) }
	sts := threeTemplates(3)
	stored := statefulSet("shop", "web", 2, dateraTemplate("data", "datera-gold", "1Gi"))
	stored.Spec.VolumeClaimTemplates[0].Annotations = map[string]string{mutate.AnnStatefulSet: "web", mutate.AnnClaimTemplate: "data"}
	more := stored.DeepCopy()
	more.Spec.Replicas = ptr.To[int32](4)
	blog := statefulSet("blog", "cockroachdb", 3, dateraTemplate("datadir", "", "1Gi"))
	blog.Spec.VolumeClaimTemplates[0].Annotations = map[string]string{mutate.AlphaClassAnnotation: "anything", mutate.BetaClassAnnotation: "x"}
	dry := stsRequest(f, admissionv1.Create, sts, nil)
	dry.DryRun = ptr.To(true)
	for _, b := range [][]byte{
		seed(stsRequest(f, admissionv1.Create, sts, nil)),
		seed(stsRequest(f, admissionv1.Create, blog, nil)),
		seed(stsRequest(f, admissionv1.Update, more, stored)),
		seed(dry),
		seed(claimRequest(f, admissionv1.Create, claimOf(stored, 0, 3))),
		seed(scaleRequest(f, "shop", "web", 2, 5)),
		[]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","operation":"CREATE","object":null}}`),
		[]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u","operation":"CREATE","object":{"spec":{"volumeClaimTemplates":[{}]}}}}`),
		[]byte(`{}`), []byte(``), []byte(`null`),
	} {
		for route := range fuzzPaths {
			f.Add(uint8(route), b)
		}
	}
	fx := fuzzFixture(f)
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		if tooManyReplicas(body) {
			t.Skip("replicas above the fuzz cap (TestBugHugeReplicas)")
		}
		fx.resetIfBig()
		w := post(fx.h, fuzzPaths[int(route)%len(fuzzPaths)], body, "application/json")
		checkFuzzAnswer(t, w.Code, w.Body.Bytes(), body)
	})
}

// FuzzStatefulSetObject mutates a valid StatefulSet (JSON) inside a valid review, so the fuzzer
// spends its time in the decisions and the patch rather than in the envelope. Besides the
// bytes of the object it drives the fields that matter most — one annotation, the class and
// the storage request of one claim template — so that inputs stay JSON. Beyond the invariants
// above: for an object the apiserver could send (case-sensitive, no duplicate or unknown
// members), a CREATE patch is idempotent — the patched object needs no further patch.
func FuzzStatefulSetObject(f *testing.F) {
	seeds := []*appsv1.StatefulSet{
		threeTemplates(3),
		statefulSet("blog", "cockroachdb", 5, dateraTemplate("datadir", "", "1Gi")),
		func() *appsv1.StatefulSet {
			s := statefulSet("shop", "web", 2, dateraTemplate("data", "", "1500Mi"), dateraTemplate("cache", "", "1Gi"))
			s.Spec.VolumeClaimTemplates[0].Annotations = map[string]string{mutate.BetaClassAnnotation: "datera-gold", "petfabric.io/replica": "5", "petfabric.io/size": "3"}
			s.Spec.VolumeClaimTemplates[1].Annotations = map[string]string{mutate.AlphaClassAnnotation: "datera", "a/b~c": "x"}
			s.Spec.Ordinals = &appsv1.StatefulSetOrdinals{Start: 3}
			return s
		}(),
	}
	fields := []struct{ key, val, class, size string }{
		{"", "", "", ""},
		{"petfabric.io/replica", "4", "datera-gold", "2Gi"},
		{mutate.BetaClassAnnotation, "datera", "-", "1.5Gi"},
		{mutate.AlphaClassAnnotation, "anything", "-", "100Mi"},
		{"petfabric.io/size", "20", "datera", "32768Gi"},
		{"petfabric.io/fsType", "ext4", "", "9Ei"},
		{"petfabric.io/maxIops", "10000000", "datera", "1"},
		{"petfabric.io/backstoreServer", "x:7717", "datera", "1Gi"},
	}
	for i, s := range seeds {
		b, err := json.Marshal(s)
		if err != nil {
			f.Fatal(err)
		}
		for j, fl := range fields {
			f.Add(b, uint8(j), fl.key, fl.val, fl.class, fl.size, (i+j)%2 == 1, j%3 == 2)
		}
	}
	fallback, _ := json.Marshal(seeds[0])
	old := statefulSet("shop", "web", 1, dateraTemplate("data", "datera-gold", "1Gi"))
	fx := fuzzFixture(f)
	f.Fuzz(func(t *testing.T, obj []byte, tpl uint8, annKey, annVal, class, size string, update, dryRun bool) {
		obj = setTemplateFields(obj, fallback, int(tpl), annKey, annVal, class, size)
		req := &admissionv1.AdmissionRequest{
			UID: "fuzz", Namespace: "shop", Name: "web", Operation: admissionv1.Create,
			Object: runtime.RawExtension{Raw: obj}, DryRun: ptr.To(dryRun),
		}
		if update {
			req.Operation = admissionv1.Update
			req.OldObject = raw(t, old)
		}
		body := reviewBody(t, req)
		if tooManyReplicas(body) {
			t.Skip("replicas above the fuzz cap (TestBugHugeReplicas)")
		}
		fx.resetIfBig()
		w := post(fx.h, PathStatefulSets, body, "application/json")
		resp := checkFuzzAnswer(t, w.Code, w.Body.Bytes(), body)
		if resp == nil || len(resp.Patch) == 0 {
			return
		}
		var sts appsv1.StatefulSet
		if strict, err := sigsjson.UnmarshalStrict(obj, &sts); err != nil || len(strict) > 0 {
			return // not an object the apiserver sends
		}
		patched, err := applyPatchE(obj, resp.Patch)
		if err != nil {
			t.Fatal(err)
		}
		again := reviewBody(t, &admissionv1.AdmissionRequest{UID: "again", Namespace: "shop", Name: "web", Operation: admissionv1.Create,
			Object: runtime.RawExtension{Raw: patched}, DryRun: ptr.To(true)})
		w = post(fx.h, PathStatefulSets, again, "application/json")
		resp2 := checkFuzzAnswer(t, w.Code, w.Body.Bytes(), again)
		if resp2 == nil || !resp2.Allowed || len(resp2.Patch) > 0 {
			t.Fatalf("not idempotent: first patch %s on %s; second answer %+v", resp.Patch, obj, resp2)
		}
	})
}

// setTemplateFields sets, on claim template i of the StatefulSet JSON obj (fallback when obj
// is not a JSON object), the annotation key=val (when key is set), spec.storageClassName
// (class; "-" removes it) and the storage request (size). Shapes it does not expect are left
// alone: the handler must cope with them anyway.
func setTemplateFields(obj, fallback []byte, i int, key, val, class, size string) []byte {
	var m map[string]any
	if json.Unmarshal(obj, &m) != nil || m == nil {
		if json.Unmarshal(fallback, &m) != nil {
			return fallback
		}
	}
	spec, _ := m["spec"].(map[string]any)
	tpls, _ := spec["volumeClaimTemplates"].([]any)
	if len(tpls) == 0 {
		return mustMarshal(m)
	}
	t, _ := tpls[i%len(tpls)].(map[string]any)
	if t == nil {
		return mustMarshal(m)
	}
	if key != "" {
		md, ok := t["metadata"].(map[string]any)
		if !ok {
			md = map[string]any{}
			t["metadata"] = md
		}
		ann, ok := md["annotations"].(map[string]any)
		if !ok {
			ann = map[string]any{}
			md["annotations"] = ann
		}
		ann[key] = val
	}
	ts, ok := t["spec"].(map[string]any)
	if !ok {
		ts = map[string]any{}
		t["spec"] = ts
	}
	switch class {
	case "":
	case "-":
		delete(ts, "storageClassName")
	default:
		ts["storageClassName"] = class
	}
	if size != "" {
		ts["resources"] = map[string]any{"requests": map[string]any{"storage": size}}
	}
	return mustMarshal(m)
}

func mustMarshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
