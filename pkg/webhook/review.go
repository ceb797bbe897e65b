package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"runtime/debug"

	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/petfabric/petfabric/pkg/serving"
)

// MaxBodyBytes bounds an AdmissionReview: the apiserver caps request bodies at 3 MiB, and a
// review carries old and new object plus envelope (controller-runtime's reasoning and value).
const MaxBodyBytes = 7 << 20

// admitFunc decides one AdmissionRequest. It returns the response without UID; serveReview
// echoes the UID.
type admitFunc func(r *http.Request, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse

// serveReview is the AdmissionReview envelope around an admitFunc: method, content type and
// size checks, decoding, UID echo, panics turned into an Errored review, and metrics.
func (s *Server) serveReview(route string, admit admitFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		timer := s.metrics.start(route)
		result := "error"
		defer func() { timer.observe(result) }()

		if r.Method != http.MethodPost {
			writeStatus(w, http.StatusMethodNotAllowed, "admission reviews are POSTed")
			return
		}
		if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
			writeStatus(w, http.StatusBadRequest, fmt.Sprintf("content type %q: want application/json", r.Header.Get("Content-Type")))
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, MaxBodyBytes+1))
		if err != nil {
			writeStatus(w, http.StatusBadRequest, "read body: "+err.Error())
			return
		}
		if len(body) > MaxBodyBytes {
			writeStatus(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body larger than %d bytes", MaxBodyBytes))
			return
		}
		if len(body) == 0 {
			writeStatus(w, http.StatusBadRequest, "empty body: want an AdmissionReview")
			return
		}
		var review admissionv1.AdmissionReview
		if err := json.Unmarshal(body, &review); err != nil {
			writeStatus(w, http.StatusBadRequest, "decode AdmissionReview: "+err.Error())
			return
		}
		if review.Request == nil {
			writeStatus(w, http.StatusBadRequest, "AdmissionReview has no request")
			return
		}
		if review.APIVersion != admissionv1.SchemeGroupVersion.String() || review.Kind != "AdmissionReview" {
			writeStatus(w, http.StatusBadRequest, fmt.Sprintf("got %s %s: want admission.k8s.io/v1 AdmissionReview", review.APIVersion, review.Kind))
			return
		}
		req := review.Request
		// Every log line about this request names it: the admission UID (the apiserver's
		// audit log has it too), the kind and the object.
		log := s.log.With("uid", req.UID, "route", route, "operation", req.Operation,
			"kind", req.Kind.Kind, "namespace", req.Namespace, "name", req.Name)
		r = r.WithContext(serving.WithLogger(r.Context(), log))
		resp := s.admitSafely(r, req, admit, route)
		resp.UID = req.UID
		result = resultOf(resp)
		out := admissionv1.AdmissionReview{TypeMeta: review.TypeMeta, Response: resp}
		w.Header().Set("Content-Type", "application/json")
		if err := json.NewEncoder(w).Encode(&out); err != nil {
			log.Error("write admission response", "err", err)
		}
	}
}

// admitSafely turns a panic in a handler into an Errored response, so the apiserver gets a
// well-formed review (and failurePolicy decides) instead of a dropped connection.
func (s *Server) admitSafely(r *http.Request, req *admissionv1.AdmissionRequest, admit admitFunc, route string) (resp *admissionv1.AdmissionResponse) {
	defer func() {
		if p := recover(); p != nil {
			s.logger(r.Context()).Error("admission handler panicked", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			resp = errored(http.StatusInternalServerError, fmt.Errorf("internal error in petfabric webhook: %v", p))
		}
	}()
	return admit(r, req)
}

// logger is the request-scoped logger serveReview put in ctx, or the server's.
func (s *Server) logger(ctx context.Context) *slog.Logger { return serving.LoggerFrom(ctx, s.log) }

func resultOf(resp *admissionv1.AdmissionResponse) string {
	switch {
	case resp.Result != nil && resp.Result.Code >= 500:
		return "error"
	case !resp.Allowed:
		return "denied"
	case len(resp.Patch) > 0:
		return "patched"
	default:
		return "allowed"
	}
}

func allowed() *admissionv1.AdmissionResponse { return &admissionv1.AdmissionResponse{Allowed: true} }

func denied(code int32, msg string) *admissionv1.AdmissionResponse {
	return &admissionv1.AdmissionResponse{Allowed: false, Result: &metav1.Status{
		Status: metav1.StatusFailure, Code: code, Reason: reasonFor(code), Message: msg,
	}}
}

func errored(code int32, err error) *admissionv1.AdmissionResponse {
	return denied(code, err.Error())
}

func reasonFor(code int32) metav1.StatusReason {
	switch code {
	case http.StatusBadRequest:
		return metav1.StatusReasonBadRequest
	case http.StatusUnprocessableEntity:
		return metav1.StatusReasonInvalid
	case http.StatusConflict:
		return metav1.StatusReasonConflict
	case http.StatusForbidden:
		return metav1.StatusReasonForbidden
	default:
		return metav1.StatusReasonInternalError
	}
}

func patched(patch []byte) *admissionv1.AdmissionResponse {
	resp := allowed()
	if len(patch) > 0 {
		pt := admissionv1.PatchTypeJSONPatch
		resp.Patch, resp.PatchType = patch, &pt
	}
	return resp
}

// writeStatus answers a request that is not a valid review: an HTTP error whose body is a
// Status, so a person debugging with curl sees why.
func writeStatus(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(&metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
		Status:   metav1.StatusFailure, Code: int32(code), Message: msg,
	})
}

var errNotFound = errors.New("not found")
