package fake

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// Datera error names: the "name" field of an error body.
const (
	errNotFound         = "NotFoundError"
	errConflict         = "ConflictError"
	errInvalidRequest   = "InvalidRequestError"
	errValidationFailed = "ValidationFailedError"
	errAuthFailed       = "AuthFailedError"
	errPermission       = "PermissionDeniedError"
	errInternal         = "InternalError"
)

// Error codes. Public sources establish only 15 (duplicate snapshot) and 99 (version probe); the
// others are this simulator's own stable choices.
var errorCodes = map[string]int{
	errInternal:         1,
	errAuthFailed:       2,
	errPermission:       3,
	errNotFound:         4,
	errConflict:         9,
	errInvalidRequest:   10,
	errValidationFailed: 11,
}

const (
	// msgInvalidSession is the message clients recognise for an expired session (PYSDK).
	msgInvalidSession = "The key provided with the request does not correspond to a valid session."
	// msgInitializing marks a retryable 500 (PYSDK).
	msgInitializing = "REST server is still initializing"
	// maxRequestBody bounds request bodies.
	maxRequestBody = 1 << 20
)

// apiError is a Datera error response.
type apiError struct {
	status  int
	name    string
	message string
	errors  []string
}

func (e *apiError) Error() string { return fmt.Sprintf("%d %s: %s", e.status, e.name, e.message) }

func notFound(format string, args ...any) *apiError {
	return &apiError{status: http.StatusNotFound, name: errNotFound, message: fmt.Sprintf(format, args...)}
}

func conflict(format string, args ...any) *apiError {
	return &apiError{status: http.StatusConflict, name: errConflict, message: fmt.Sprintf(format, args...)}
}

func invalidRequest(format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, name: errInvalidRequest, message: fmt.Sprintf(format, args...)}
}

func validationFailed(details ...string) *apiError {
	return &apiError{status: http.StatusUnprocessableEntity, name: errValidationFailed,
		message: "Request failed schema validation", errors: details}
}

func authFailed(msg string) *apiError {
	return &apiError{status: http.StatusUnauthorized, name: errAuthFailed, message: msg}
}

func permissionDenied(format string, args ...any) *apiError {
	return &apiError{status: http.StatusForbidden, name: errPermission, message: fmt.Sprintf(format, args...)}
}

func internalError(format string, args ...any) *apiError {
	return &apiError{status: http.StatusInternalServerError, name: errInternal, message: fmt.Sprintf(format, args...)}
}

// result is what a handler produces; the server turns it into a response (or drops it).
type result struct {
	status int
	path   string         // envelope "path"
	data   any            // envelope "data"
	meta   map[string]any // list metadata
	raw    any            // written without an envelope (login, api_versions)
	err    *apiError
}

func ok(path string, data any) result { return result{status: http.StatusOK, path: path, data: data} }

func fail(err *apiError) result { return result{err: err} }

// write renders a result for the request's version and tenant.
func (c *call) write(w http.ResponseWriter, res result) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	if res.err != nil {
		body := map[string]any{
			"name":       res.err.name,
			"code":       errorCodes[res.err.name],
			"http":       res.err.status,
			"message":    res.err.message,
			"ts":         time.Now().UTC().Format(time.RFC3339Nano),
			"version":    c.version,
			"op":         c.r.Method,
			"tenant":     c.tenantPath,
			"path":       c.r.URL.Path,
			"params":     map[string]any{},
			"api_req_id": c.reqID,
			"errors":     nonNil(res.err.errors),
		}
		writeJSON(w, res.err.status, body)
		return
	}
	if res.raw != nil {
		writeJSON(w, res.status, res.raw)
		return
	}
	env := map[string]any{"tenant": c.tenantPath, "path": res.path, "version": c.version, "data": res.data}
	if res.meta != nil {
		env["metadata"] = res.meta
	}
	writeJSON(w, res.status, env)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, `{"message":"encoding response failed"}`, http.StatusInternalServerError)
		return
	}
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// decodeJSON reads a request body into dst with the schema's additionalProperties:false: unknown
// keys and mistyped values are 422 ValidationFailedError, malformed JSON is 400. An empty body
// decodes as {}.
func decodeJSON(r *http.Request, dst any) *apiError {
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxRequestBody))
	if err != nil {
		return invalidRequest("reading request body: %v", err)
	}
	if strings.TrimSpace(string(body)) == "" {
		return nil
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		var syntax *json.SyntaxError
		var typeErr *json.UnmarshalTypeError
		switch {
		case errors.As(err, &syntax), errors.Is(err, io.ErrUnexpectedEOF):
			return invalidRequest("request body is not valid JSON: %v", err)
		case errors.As(err, &typeErr):
			return validationFailed(fmt.Sprintf("property %q: expected %s, got %s", typeErr.Field, typeErr.Type, typeErr.Value))
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			field := strings.TrimPrefix(err.Error(), "json: unknown field ")
			return validationFailed(fmt.Sprintf("additional property %s is not allowed", field))
		default:
			return validationFailed(err.Error())
		}
	}
	if dec.More() {
		return invalidRequest("request body has data after the JSON object")
	}
	return nil
}

var reFormKey = regexp.MustCompile(`^[a-z_]{1,64}$`)

// isForm reports a form-encoded body: GOSDK sends /login (and simple POSTs) that way.
func isForm(r *http.Request) bool {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	return mt == "application/x-www-form-urlencoded"
}

// readForm parses a form body and rejects keys outside allowed.
func readForm(r *http.Request, allowed ...string) (url.Values, *apiError) {
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxRequestBody))
	if err != nil {
		return nil, invalidRequest("reading request body: %v", err)
	}
	vals, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, invalidRequest("malformed form body: %v", err)
	}
	for k := range vals {
		known := false
		for _, a := range allowed {
			known = known || k == a
		}
		if !known {
			// Echo only identifier-like keys: a mis-encoded body may hold a password.
			if reFormKey.MatchString(k) {
				return nil, validationFailed(fmt.Sprintf("additional property %q is not allowed", k))
			}
			return nil, validationFailed("form body has a key that is not a property name")
		}
	}
	return vals, nil
}
